package policy

import (
	"context"
	"slices"
	"sort"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// DefaultAppraisalCacheSize is how many appraisals a policy remembers
// (WithAppraisalCache).
const DefaultAppraisalCacheSize = 256

// WithAppraisalCache sets how many appraisal results EvaluateAppraisal
// remembers (0 turns the cache off; default DefaultAppraisalCacheSize).
//
// Only policies whose result provably depends on nothing but the members
// of input they name are cached (see memoKeys), and a remembered result is
// used only after the reference values its evaluation read were looked up
// again and found unchanged (registered, replaced, deleted or expired
// values all miss). A new policy text is a new Policy, with an empty cache.
func WithAppraisalCache(entries int) Option {
	return func(c *config) { c.appraisalCache = entries }
}

// memoKeys returns the top-level input members the module can read, when
// that is all of the input it can observe and its evaluation is otherwise
// deterministic: every reference to input names a constant first member
// (input.snp…, input["sample"]…), there is no `with`, and no
// non-deterministic built-in is called (query_reference_value is checked
// separately, at lookup). ok is false when the module does not qualify.
func memoKeys(mod *ast.Module) (keys []string, ok bool) {
	ok = true
	seen := map[string]bool{}
	heads := 0
	ast.WalkRefs(mod, func(r ast.Ref) bool {
		if !r[0].Equal(ast.InputRootDocument) {
			return false
		}
		heads++
		if len(r) < 2 {
			ok = false // all of input
			return false
		}
		s, isStr := r[1].Value.(ast.String)
		if !isStr {
			ok = false // input[x]: any member
			return false
		}
		if !seen[string(s)] {
			seen[string(s)] = true
			keys = append(keys, string(s))
		}
		return false
	})
	vars := 0
	ast.WalkVars(mod, func(v ast.Var) bool {
		if v.Equal(ast.InputRootDocument.Value) {
			vars++
		}
		return false
	})
	if vars != heads {
		ok = false // input used other than as the head of a reference
	}
	ast.WalkWiths(mod, func(*ast.With) bool {
		ok = false
		return true
	})
	nondet := func(op ast.Ref) {
		if b, isBuiltin := ast.BuiltinMap[op.String()]; isBuiltin && b.Nondeterministic {
			ok = false
		}
	}
	ast.WalkExprs(mod, func(e *ast.Expr) bool {
		if e.IsCall() {
			nondet(e.Operator())
		}
		return false
	})
	ast.WalkTerms(mod, func(t *ast.Term) bool {
		if c, isCall := t.Value.(ast.Call); isCall && len(c) > 0 {
			if op, isRef := c[0].Value.(ast.Ref); isRef {
				nondet(op)
			}
		}
		return false
	})
	sort.Strings(keys)
	return keys, ok
}

// appraisalMemo remembers appraisal results by the input members the
// policy reads.
type appraisalMemo struct {
	keys []string
	max  int

	mu      sync.Mutex
	entries map[int][]*memoEntry // by the projection's hash
	n       int
	hits    int // for tests
}

type memoEntry struct {
	projection ast.Value
	// lookups are the reference values the evaluation read: id -> value
	// (ast.Null when missing).
	lookups map[string]ast.Value
	result  Appraisal
}

func newAppraisalMemo(mod *ast.Module, size int) *appraisalMemo {
	if size <= 0 {
		return nil
	}
	keys, ok := memoKeys(mod)
	if !ok {
		return nil
	}
	return &appraisalMemo{keys: keys, max: size, entries: map[int][]*memoEntry{}}
}

// project returns the members of input the policy can read, as a value.
// ok is false for an input it cannot project (then nothing is cached).
func (m *appraisalMemo) project(input any) (ast.Value, bool) {
	var terms [][2]*ast.Term
	switch in := input.(type) {
	case map[string]any:
		for _, k := range m.keys {
			v, present := in[k]
			if !present {
				continue
			}
			val, err := ast.InterfaceToValue(v)
			if err != nil {
				return nil, false
			}
			terms = append(terms, [2]*ast.Term{ast.StringTerm(k), ast.NewTerm(val)})
		}
	case ast.Object:
		for _, k := range m.keys {
			if t := in.Get(ast.StringTerm(k)); t != nil {
				terms = append(terms, [2]*ast.Term{ast.StringTerm(k), t})
			}
		}
	default:
		return nil, false
	}
	return ast.NewObject(terms...), true
}

// get returns a remembered result for the projection whose reference
// values are unchanged.
func (m *appraisalMemo) get(ctx context.Context, p *Policy, proj ast.Value) (Appraisal, bool) {
	h := proj.Hash()
	m.mu.Lock()
	var e *memoEntry
	for _, c := range m.entries[h] {
		if c.projection.Compare(proj) == 0 {
			e = c
			break
		}
	}
	m.mu.Unlock()
	if e == nil {
		return Appraisal{}, false
	}
	for id, want := range e.lookups {
		got, err := p.lookupValue(ctx, id)
		if err != nil || got.Compare(want) != 0 {
			return Appraisal{}, false
		}
	}
	m.mu.Lock()
	m.hits++
	m.mu.Unlock()
	return e.result.clone(), true
}

// put remembers a result.
func (m *appraisalMemo) put(proj ast.Value, lookups map[string]ast.Value, a Appraisal) {
	h := proj.Hash()
	e := &memoEntry{projection: proj, lookups: lookups, result: a.clone()}
	m.mu.Lock()
	defer m.mu.Unlock()
	list := m.entries[h]
	for i, c := range list {
		if c.projection.Compare(proj) == 0 {
			list[i] = e
			return
		}
	}
	if m.n >= m.max {
		for k, l := range m.entries { // drop an arbitrary bucket
			m.n -= len(l)
			delete(m.entries, k)
			break
		}
	}
	m.entries[h] = append(m.entries[h], e)
	m.n++
}

func (m *appraisalMemo) hitCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits
}

// clone copies the slices, so that callers cannot change a remembered
// result.
func (a Appraisal) clone() Appraisal {
	a.Extensions = slices.Clone(a.Extensions)
	a.Reasons = slices.Clone(a.Reasons)
	a.MissingReferenceValues = slices.Clone(a.MissingReferenceValues)
	return a
}
