// Package jsonstrict owns the JSON check encoding/json does not make: an
// object that names a member twice. encoding/json (and OPA) keep the last
// of them, containers/image refuses the document; where a silent choice
// could differ from what another reader of the same text sees, callers
// refuse it with UniqueMembers.
package jsonstrict

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrDuplicateMember is UniqueMembers' error for an object naming a
// member twice.
var ErrDuplicateMember = errors.New("ambiguous JSON")

// UniqueMembers reads the JSON text data and refuses (ErrDuplicateMember,
// naming the member) an object, at any depth, that names a member twice.
// Names compare as decoded (`"\u0061"` is `"a"`). Invalid JSON is
// encoding/json's error.
func UniqueMembers(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		names map[string]bool // nil for an array
		key   bool            // the next token is a member name
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(stack) > 0 {
				return fmt.Errorf("JSON text ends inside a value: %w", io.ErrUnexpectedEOF)
			}
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if name, ok := tok.(string); ok && top != nil && top.names != nil && top.key {
			if top.names[name] {
				return fmt.Errorf("member %q appears twice in one object (%w)", name, ErrDuplicateMember)
			}
			top.names[name] = true
			top.key = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{names: map[string]bool{}, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].names != nil {
			stack[len(stack)-1].key = true // a value ended: a name comes next
		}
	}
}
