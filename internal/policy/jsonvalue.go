package policy

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// jsonToValue converts one JSON text to a Rego value in a single pass,
// giving what ast.ValueFromReader gives (numbers keep their literal text,
// strings decode as encoding/json decodes them, the last of duplicate
// object members wins) without the intermediate map[string]any.
func jsonToValue(data []byte) (ast.Value, error) {
	if !json.Valid(data) {
		return nil, errors.New("invalid JSON")
	}
	c := jsonConv{data: data}
	c.space()
	v, err := c.value()
	if err != nil {
		return nil, err
	}
	return v, nil
}

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
		c.pos++
		obj := ast.NewObject()
		c.space()
		if c.data[c.pos] == '}' {
			c.pos++
			return obj, nil
		}
		for {
			c.space()
			k, err := c.str()
			if err != nil {
				return nil, err
			}
			c.space()
			c.pos++ // ':'
			c.space()
			v, err := c.value()
			if err != nil {
				return nil, err
			}
			obj.Insert(ast.NewTerm(k), ast.NewTerm(v))
			c.space()
			if c.data[c.pos] == '}' {
				c.pos++
				return obj, nil
			}
			c.pos++ // ','
		}
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
