package jsonstrict

import (
	"errors"
	"strings"
	"testing"
)

func TestUniqueMembers(t *testing.T) {
	for doc, dup := range map[string]string{
		`{"a":1,"a":2}`:                             `"a"`,
		`{"a":1,"b":{"c":[1,{"d":1,"d":2}]}}`:       `"d"`,
		`{"\u0061":1,"a":2}`:                        `"a"`,
		`{"a":{"a":{"a":1}},"b":[{"a":1},{"a":1}]}`: "",
		`[]`: "", `"x"`: "", `{}`: "", `{"":1,"x":{"":2}}`: "",
	} {
		err := UniqueMembers([]byte(doc))
		if dup == "" && err != nil || dup != "" && (!errors.Is(err, ErrDuplicateMember) || !strings.Contains(err.Error(), dup)) {
			t.Errorf("%s: %v, want duplicate %s", doc, err, dup)
		}
	}
	if err := UniqueMembers([]byte(`{"a":`)); err == nil || errors.Is(err, ErrDuplicateMember) {
		t.Errorf("truncated JSON: %v", err)
	}
}
