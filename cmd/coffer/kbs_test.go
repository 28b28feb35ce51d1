package main

import "testing"

// get-reference-value takes its ID from --id (Trustee's kbs-client) or a
// positional argument, exactly one of them.
func TestReferenceValueID(t *testing.T) {
	for _, c := range []struct {
		flag string
		args []string
		want string // "" = error
	}{
		{"svn", nil, "svn"},
		{"", []string{"svn"}, "svn"},
		{"a/b", nil, "a/b"},
		{"svn", []string{"svn"}, ""},
		{"", nil, ""},
		{"", []string{""}, ""},
	} {
		got, err := referenceValueID(c.flag, c.args)
		if c.want == "" {
			if err == nil {
				t.Errorf("--id %q args %q: got %q, want an error", c.flag, c.args, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("--id %q args %q: %q %v, want %q", c.flag, c.args, got, err, c.want)
		}
	}
}
