package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// jsonToValue converts one JSON text to a Rego value in a single pass,
// giving what ast.ValueFromReader gives (numbers keep their literal text,
// strings decode as encoding/json decodes them) without the intermediate
// map[string]any. An object with two members of the same name is refused
// (errDuplicateMember): encoding/json and OPA would keep the last one, and
// a projection that skips members must not decide on a different one than
// the whole value, so the ambiguity is an error rather than a choice.
func jsonToValue(data []byte) (ast.Value, error) { return projectJSON(data, fullShape) }

// jsonConv walks text already checked by json.Valid.
type jsonConv struct {
	data []byte
	pos  int
}

func (c *jsonConv) space() {
	for c.pos < len(c.data) {
		switch c.data[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *jsonConv) value() (ast.Value, error) {
	switch b := c.data[c.pos]; {
	case b == '{':
		return c.object(nil)
	case b == '[':
		c.pos++
		var elems []*ast.Term
		c.space()
		if c.data[c.pos] == ']' {
			c.pos++
			return ast.NewArray(), nil
		}
		for {
			c.space()
			v, err := c.value()
			if err != nil {
				return nil, err
			}
			elems = append(elems, ast.NewTerm(v))
			c.space()
			if c.data[c.pos] == ']' {
				c.pos++
				return ast.NewArray(elems...), nil
			}
			c.pos++ // ','
		}
	case b == '"':
		return c.str()
	case b == 't':
		c.pos += 4
		return ast.Boolean(true), nil
	case b == 'f':
		c.pos += 5
		return ast.Boolean(false), nil
	case b == 'n':
		c.pos += 4
		return ast.Null{}, nil
	default:
		start := c.pos
		for c.pos < len(c.data) {
			switch c.data[c.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return ast.Number(c.data[start:c.pos]), nil
			}
			c.pos++
		}
		return ast.Number(c.data[start:c.pos]), nil
	}
}

// str converts the string at pos; plain ASCII without escapes is copied,
// anything else is decoded by encoding/json.
func (c *jsonConv) str() (ast.String, error) {
	start := c.pos
	c.pos++
	plain := true
	for {
		b := c.data[c.pos]
		if b == '"' {
			break
		}
		if b == '\\' {
			plain = false
			c.pos++ // the escaped byte cannot end the string
		} else if b >= 0x80 {
			plain = false
		}
		c.pos++
	}
	c.pos++
	if plain {
		return ast.String(c.data[start+1 : c.pos-1]), nil
	}
	var s string
	if err := json.Unmarshal(c.data[start:c.pos], &s); err != nil {
		return "", fmt.Errorf("decode JSON string: %w", err)
	}
	return ast.String(s), nil
}

// projShape names the members of a JSON value that projectJSON keeps:
// members by name, any other member by the any shape, and the value in
// full when full is set. A value that is not an object is always kept in
// full (its type is part of what a policy can observe).
type projShape struct {
	full    bool
	members map[string]*projShape
	any     *projShape
}

// skipAll keeps no member of an object.
var skipAll = &projShape{}

// fullShape keeps a whole value.
var fullShape = &projShape{full: true}

// projectJSON converts the parts of one JSON text that shape names, as
// jsonToValue would convert them, skipping the rest.
func projectJSON(data []byte, shape *projShape) (ast.Value, error) {
	if !json.Valid(data) {
		return nil, errors.New("invalid JSON")
	}
	c := jsonConv{data: data}
	c.space()
	return c.project(shape)
}

func (c *jsonConv) project(shape *projShape) (ast.Value, error) {
	if shape.full || c.data[c.pos] != '{' {
		return c.value()
	}
	return c.object(shape)
}

// errDuplicateMember is the error for an object naming a member twice.
var errDuplicateMember = errors.New("an object has two members of the same name")

// memberNames tracks an object's member names to refuse duplicates: a
// linear scan while there are few (claims objects have a handful), a map
// beyond, so that a hostile object with many members stays linear.
type memberNames struct {
	few  []ast.String
	many map[ast.String]struct{}
}

// add records k and reports whether it was new.
func (m *memberNames) add(k ast.String) bool {
	if m.many != nil {
		if _, dup := m.many[k]; dup {
			return false
		}
		m.many[k] = struct{}{}
		return true
	}
	for _, x := range m.few {
		if x == k {
			return false
		}
	}
	if len(m.few) < 16 {
		m.few = append(m.few, k)
		return true
	}
	m.many = make(map[ast.String]struct{}, 2*len(m.few))
	for _, x := range m.few {
		m.many[x] = struct{}{}
	}
	m.many[k] = struct{}{}
	return true
}

// object converts the object at pos: every member in full when shape is
// nil, else the members shape names (projected), skipping the rest. Every
// member's name, skipped or not, is checked against the others.
func (c *jsonConv) object(shape *projShape) (ast.Value, error) {
	c.pos++
	obj := ast.NewObject()
	c.space()
	if c.data[c.pos] == '}' {
		c.pos++
		return obj, nil
	}
	var names memberNames
	for {
		c.space()
		k, err := c.str()
		if err != nil {
			return nil, err
		}
		if !names.add(k) {
			return nil, fmt.Errorf("%w: %q", errDuplicateMember, string(k))
		}
		c.space()
		c.pos++ // ':'
		c.space()
		var v ast.Value
		if shape == nil {
			v, err = c.value()
		} else if sub := shape.member(string(k)); sub != nil {
			v, err = c.project(sub)
		} else {
			err = c.skipValue()
		}
		if err != nil {
			return nil, err
		}
		if v != nil {
			obj.Insert(ast.NewTerm(k), ast.NewTerm(v))
		}
		c.space()
		if c.data[c.pos] == '}' {
			c.pos++
			return obj, nil
		}
		c.pos++ // ','
	}
}

// member is the shape of member k, or nil to skip it.
func (s *projShape) member(k string) *projShape {
	if m := s.members[k]; m != nil {
		return m
	}
	return s.any
}

// skipValue moves past the value at pos without converting it, refusing
// duplicate member names inside it as the conversion does, so that a
// projection refuses exactly what the whole conversion refuses. (Nesting
// is bounded: json.Valid refuses texts nested deeper than 10000.)
func (c *jsonConv) skipValue() error {
	switch c.data[c.pos] {
	case '{':
		_, err := c.object(skipAll) // names checked, every member skipped
		return err
	case '[':
		c.pos++
		c.space()
		if c.data[c.pos] == ']' {
			c.pos++
			return nil
		}
		for {
			c.space()
			if err := c.skipValue(); err != nil {
				return err
			}
			c.space()
			if c.data[c.pos] == ']' {
				c.pos++
				return nil
			}
			c.pos++ // ','
		}
	}
	c.skip()
	return nil
}

// skip moves past the value at pos (text already checked by json.Valid).
func (c *jsonConv) skip() {
	depth := 0
	for {
		switch b := c.data[c.pos]; b {
		case '{', '[':
			depth++
			c.pos++
		case '}', ']':
			depth--
			c.pos++
		case '"':
			c.pos++
			for c.data[c.pos] != '"' {
				if c.data[c.pos] == '\\' {
					c.pos++
				}
				c.pos++
			}
			c.pos++
		case ',', ':', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return
			}
			c.pos++
		default: // literal or number
			for c.pos < len(c.data) && !strings.ContainsRune(",}] \t\n\r:", rune(c.data[c.pos])) {
				c.pos++
			}
		}
		if depth == 0 || c.pos >= len(c.data) {
			return
		}
	}
}
