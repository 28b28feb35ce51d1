package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/types"
)

// BuiltinQueryReferenceValue is the name of the custom builtin.
const BuiltinQueryReferenceValue = "query_reference_value"

// DefaultReferenceValueTimeout bounds one query_reference_value lookup
// (Trustee uses 10 s).
const DefaultReferenceValueTimeout = 10 * time.Second

// ReferenceValueFunc looks up a reference value: (value, true, nil) when
// registered and valid, (nil, false, nil) when unknown or expired.
// rvps.Service.Query has this signature.
type ReferenceValueFunc func(ctx context.Context, id string) (any, bool, error)

// Option configures Compile.
type Option func(*config)

type config struct {
	rv             ReferenceValueFunc
	rvTimeout      time.Duration
	explain        bool
	appraisalCache int
}

// WithReferenceValues backs query_reference_value with f. Without it the
// builtin always returns null.
func WithReferenceValues(f ReferenceValueFunc) Option {
	return func(c *config) { c.rv = f }
}

// WithReferenceValueTimeout bounds each reference value lookup when the
// evaluation context has no deadline of its own (default
// DefaultReferenceValueTimeout).
func WithReferenceValueTimeout(d time.Duration) Option {
	return func(c *config) { c.rvTimeout = d }
}

// WithExplain turns the trace-based explanations of denials and
// non-affirming appraisals on (the default) or off. Explaining re-runs the
// evaluation with tracing, only on the deny / non-affirming path.
func WithExplain(on bool) Option {
	return func(c *config) { c.explain = on }
}

// Policy is a compiled policy with its queries prepared. Safe for
// concurrent use.
type Policy struct {
	name    string
	source  string
	version ast.RegoVersion
	cfg     config

	appraisal rego.PreparedEvalQuery
	allow     rego.PreparedEvalQuery
	reasons   *rego.PreparedEvalQuery // nil unless deny_reasons or reasons is defined

	rules  map[string][]*ruleInfo // rule name -> rule bodies, for explanations
	memo   *appraisalMemo         // nil: appraisals are not cached
	native nativeAllow            // nil unless the text is a built-in resource policy
}

// Name returns the name given to Compile.
func (p *Policy) Name() string { return p.name }

// Source returns the Rego text given to Compile.
func (p *Policy) Source() string { return p.source }

// RegoVersion returns "v1" or "v0": the syntax the module was parsed as.
func (p *Policy) RegoVersion() string {
	if p.version == ast.RegoV0 {
		return "v0"
	}
	return "v1"
}

// ErrorDetail is one parse or compile error.
type ErrorDetail struct {
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// CompileError is returned by Compile for a policy that does not parse or
// compile. Its message names the policy and each error's line.
type CompileError struct {
	Policy string
	// Stage is "parse" or "compile".
	Stage string
	// Syntax is the Rego version whose errors are reported ("v1" or "v0"
	// for parse errors, when neither parsed).
	Syntax  string
	Details []ErrorDetail
}

func (e *CompileError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policy %q: %s error", e.Policy, e.Stage)
	if e.Syntax != "" {
		fmt.Fprintf(&b, " (as Rego %s)", e.Syntax)
	}
	for i, d := range e.Details {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if d.Line > 0 {
			fmt.Fprintf(&b, "line %d, column %d: ", d.Line, d.Column)
		}
		b.WriteString(d.Message)
	}
	return b.String()
}

func newCompileError(name, stage, syntax string, err error) *CompileError {
	ce := &CompileError{Policy: name, Stage: stage, Syntax: syntax}
	var errs ast.Errors
	var one *ast.Error
	switch {
	case errors.As(err, &errs):
		for _, e := range errs {
			ce.Details = append(ce.Details, detailOf(e))
		}
	case errors.As(err, &one):
		ce.Details = append(ce.Details, detailOf(one))
	default:
		ce.Details = append(ce.Details, ErrorDetail{Message: err.Error()})
	}
	return ce
}

func detailOf(e *ast.Error) ErrorDetail {
	d := ErrorDetail{Code: e.Code, Message: e.Message}
	if e.Location != nil {
		d.Line, d.Column = e.Location.Row, e.Location.Col
	}
	return d
}

func firstRow(err error) int {
	var errs ast.Errors
	if errors.As(err, &errs) && len(errs) > 0 && errs[0].Location != nil {
		return errs[0].Location.Row
	}
	return 0
}

// parseModule parses src as Rego v1, falling back to v0. When neither
// parses, it reports the errors of the dialect that got further.
func parseModule(name, src string) (*ast.Module, ast.RegoVersion, error) {
	m1, err1 := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err1 == nil {
		return m1, ast.RegoV1, nil
	}
	m0, err0 := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV0})
	if err0 == nil {
		return m0, ast.RegoV0, nil
	}
	if firstRow(err0) > firstRow(err1) {
		return nil, 0, newCompileError(name, "parse", "v0", err0)
	}
	return nil, 0, newCompileError(name, "parse", "v1", err1)
}

// Query texts. Comprehensions keep an undefined rule from making the whole
// query undefined.
const (
	appraisalQuery = `tc := [x | x := data.policy.trust_claims]; ext := [x | x := data.policy.extensions]`
	allowQuery     = `allow := [x | x := data.policy.allow]`
	reasonsQuery   = `dr := [x | x := data.policy.deny_reasons]; r := [x | x := data.policy.reasons]`
)

// Compile parses (v1, else v0), compiles and prepares a policy. The module
// must declare `package policy`. name identifies the policy in errors and
// explanations.
func Compile(name, module string, opts ...Option) (*Policy, error) {
	cfg := config{rvTimeout: DefaultReferenceValueTimeout, explain: true, appraisalCache: DefaultAppraisalCacheSize}
	for _, o := range opts {
		o(&cfg)
	}
	if strings.TrimSpace(module) == "" {
		return nil, &CompileError{Policy: name, Stage: "parse", Details: []ErrorDetail{{Message: "policy is empty; it must be a Rego module starting with `package policy`"}}}
	}
	mod, version, err := parseModule(name, module)
	if err != nil {
		return nil, err
	}
	if got := mod.Package.Path.String(); got != "data.policy" {
		d := ErrorDetail{Message: fmt.Sprintf("package is %q; coffer policies must declare `package policy`", strings.TrimPrefix(got, "data."))}
		if mod.Package.Location != nil {
			d.Line, d.Column = mod.Package.Location.Row, mod.Package.Location.Col
		}
		return nil, &CompileError{Policy: name, Stage: "compile", Details: []ErrorDetail{d}}
	}
	p := &Policy{name: name, source: module, version: version, cfg: cfg, rules: collectRules(mod), memo: newAppraisalMemo(mod, cfg.appraisalCache), native: nativeFor(module)}
	st := &dataStore{Store: inmem.New()}
	caps := capabilities()
	prepare := func(q string) (rego.PreparedEvalQuery, error) {
		r := rego.New(
			rego.Query(q),
			rego.ParsedModule(mod),
			rego.Store(st),
			rego.Capabilities(caps),
			rego.Function1(&rego.Function{
				Name:             BuiltinQueryReferenceValue,
				Description:      "Returns the reference value registered under the given id, or null.",
				Decl:             types.NewFunction(types.Args(types.Named("id", types.S)), types.Named("value", types.A)),
				Memoize:          true,
				Nondeterministic: true,
			}, p.queryReferenceValue),
		)
		pq, err := r.PrepareForEval(context.Background())
		if err != nil {
			return pq, newCompileError(name, "compile", "", err)
		}
		return pq, nil
	}
	if p.appraisal, err = prepare(appraisalQuery); err != nil {
		return nil, err
	}
	if p.allow, err = prepare(allowQuery); err != nil {
		return nil, err
	}
	if len(p.rules["deny_reasons"]) > 0 || len(p.rules["reasons"]) > 0 {
		pq, err := prepare(reasonsQuery)
		if err != nil {
			return nil, err
		}
		p.reasons = &pq
	}
	return p, nil
}

// deniedBuiltins reach outside the process; policies are pure functions
// of input, data and reference values, so they are not available.
var deniedBuiltins = map[string]bool{
	"http.send":          true,
	"net.lookup_ip_addr": true,
	"opa.runtime":        true,
}

// capabilities returns OPA's capabilities without deniedBuiltins.
func capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	kept := c.Builtins[:0]
	for _, b := range c.Builtins {
		if !deniedBuiltins[b.Name] {
			kept = append(kept, b)
		}
	}
	c.Builtins = kept
	return c
}

// evalNotes collects facts during one evaluation (carried in its context).
type evalNotes struct {
	mu      sync.Mutex
	missing []string // reference values queried but not registered / expired
	rvErr   error    // first reference value lookup error
	// lookups are the values query_reference_value returned (ast.Null for
	// a missing one), for the appraisal cache.
	lookups map[string]ast.Value
}

func (n *evalNotes) addLookup(id string, v ast.Value) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.lookups == nil {
		n.lookups = map[string]ast.Value{}
	}
	n.lookups[id] = v
}

func (n *evalNotes) setErr(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.rvErr == nil {
		n.rvErr = err
	}
}

func (n *evalNotes) addMissing(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, m := range n.missing {
		if m == id {
			return
		}
	}
	n.missing = append(n.missing, id)
}

type notesKey struct{}

func (p *Policy) queryReferenceValue(bctx rego.BuiltinContext, a *ast.Term) (*ast.Term, error) {
	id, ok := a.Value.(ast.String)
	if !ok {
		return nil, rego.NewHaltError(fmt.Errorf("%s: argument must be a string, got %v", BuiltinQueryReferenceValue, a.Value))
	}
	notes, _ := bctx.Context.Value(notesKey{}).(*evalNotes)
	val, err := p.lookupValue(bctx.Context, string(id))
	if err != nil {
		if notes != nil {
			notes.setErr(err)
		}
		return nil, rego.NewHaltError(err)
	}
	if notes != nil {
		notes.addLookup(string(id), val)
		if _, null := val.(ast.Null); null {
			notes.addMissing(string(id))
		}
	}
	return ast.NewTerm(val), nil
}

// lookupValue returns the reference value id as a Rego value: null when
// it is not registered, has expired, or there is no reference value
// source.
func (p *Policy) lookupValue(ctx context.Context, id string) (ast.Value, error) {
	if p.cfg.rv == nil {
		return ast.Null{}, nil
	}
	if _, has := ctx.Deadline(); !has && p.cfg.rvTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.rvTimeout)
		defer cancel()
	}
	v, found, err := p.cfg.rv(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%s(%q): %w", BuiltinQueryReferenceValue, id, err)
	}
	if !found || v == nil {
		return ast.Null{}, nil
	}
	val, err := ast.InterfaceToValue(v)
	if err != nil {
		return nil, fmt.Errorf("%s(%q): value is not JSON: %w", BuiltinQueryReferenceValue, id, err)
	}
	return val, nil
}

// toValue converts an evaluation input to an ast.Value once, so that a
// re-run for explanations does not convert it again. json.RawMessage and
// []byte are parsed as JSON.
func toValue(x any) (ast.Value, error) { return projectValue(x, fullShape) }

// projectValue is toValue keeping, of a JSON text, only what shape names
// (other values are converted in full).
func projectValue(x any, shape *projShape) (ast.Value, error) {
	switch v := x.(type) {
	case nil:
		return nil, nil
	case ast.Value:
		return v, nil
	case json.RawMessage:
		return projectJSON(v, shape)
	case []byte:
		return projectJSON(v, shape)
	}
	return ast.InterfaceToValue(x)
}

// dataStore serves the per-evaluation `data` document from the context, so
// that one prepared query can run concurrently with different data (OPA
// otherwise binds data to the store the query was prepared with). Policies
// themselves are compiled into the prepared queries, not kept here.
type dataStore struct {
	storage.Store
}

type dataKey struct{}

func (s *dataStore) Read(ctx context.Context, _ storage.Transaction, path storage.Path) (any, error) {
	d, _ := ctx.Value(dataKey{}).(ast.Value)
	if d == nil {
		return nil, notFound(path)
	}
	v := d
	for _, seg := range path {
		switch x := v.(type) {
		case ast.Object:
			t := x.Get(ast.StringTerm(seg))
			if t == nil {
				return nil, notFound(path)
			}
			v = t.Value
		case *ast.Array:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= x.Len() {
				return nil, notFound(path)
			}
			v = x.Elem(i).Value
		default:
			return nil, notFound(path)
		}
	}
	return v, nil
}

func notFound(path storage.Path) error {
	return &storage.Error{Code: storage.NotFoundErr, Message: path.String()}
}

// eval runs pq with input and data bound, returning the first result's
// bindings.
func (p *Policy) eval(ctx context.Context, pq rego.PreparedEvalQuery, input, data ast.Value, extra ...rego.EvalOption) (rego.Vars, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("policy %q: %w", p.name, err)
	}
	if data != nil {
		ctx = context.WithValue(ctx, dataKey{}, data)
	}
	notes, _ := ctx.Value(notesKey{}).(*evalNotes)
	if notes == nil {
		notes = &evalNotes{}
		ctx = context.WithValue(ctx, notesKey{}, notes)
	}
	opts := append([]rego.EvalOption{}, extra...)
	if input != nil {
		opts = append(opts, rego.EvalParsedInput(input))
	}
	rs, err := pq.Eval(ctx, opts...)
	if err != nil {
		notes.mu.Lock()
		rvErr := notes.rvErr
		notes.mu.Unlock()
		if rvErr != nil {
			// Keep the lookup error in the chain (OPA's halt error drops it).
			return nil, fmt.Errorf("%w (%w)", p.evalError(err), rvErr)
		}
		return nil, p.evalError(err)
	}
	if len(rs) == 0 {
		return rego.Vars{}, nil
	}
	return rs[0].Bindings, nil
}

// evalError makes an evaluation error name the policy and, where OPA gives
// one, the line.
func (p *Policy) evalError(err error) error {
	var te *topdown.Error
	if errors.As(err, &te) && te.Location != nil {
		return fmt.Errorf("policy %q: evaluation failed at line %d: %s: %w", p.name, te.Location.Row, te.Code, err)
	}
	return fmt.Errorf("policy %q: evaluation failed: %w", p.name, err)
}

// ruleInfo describes one body of a rule (an else branch is its own body),
// for explanations.
type ruleInfo struct {
	name  string
	line  int
	label string // "allow (line 7)" / "allow else (line 9)"
	exprs []exprInfo
}

type exprInfo struct {
	row, endRow, col int
	text             string
}

func collectRules(mod *ast.Module) map[string][]*ruleInfo {
	out := map[string][]*ruleInfo{}
	for _, r := range mod.Rules {
		if r.Default {
			continue
		}
		name := r.Head.Ref().String()
		kind := ""
		for cur := r; cur != nil; cur = cur.Else {
			ri := &ruleInfo{name: name}
			if cur.Location != nil {
				ri.line = cur.Location.Row
			}
			ri.label = fmt.Sprintf("%s%s (line %d)", name, kind, ri.line)
			kind = " else"
			for _, e := range cur.Body {
				if e.Location == nil {
					continue
				}
				txt := string(e.Location.Text)
				ri.exprs = append(ri.exprs, exprInfo{
					row: e.Location.Row, endRow: e.Location.Row + strings.Count(txt, "\n"),
					col: e.Location.Col, text: oneLine(txt),
				})
			}
			out[name] = append(out[name], ri)
		}
	}
	return out
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// failTracer records the locations of expressions that failed.
type failTracer struct {
	fails []*ast.Location
}

func (t *failTracer) Enabled() bool               { return true }
func (t *failTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }
func (t *failTracer) TraceEvent(e topdown.Event) {
	if e.Op != topdown.FailOp {
		return
	}
	if x, ok := e.Node.(*ast.Expr); ok && x.Location != nil {
		t.fails = append(t.fails, x.Location)
	}
}

// ruleFailure is the furthest failing condition found in one rule body.
type ruleFailure struct {
	rule *ruleInfo
	idx  int // index of the failing expression in the body; -1: never failed
}

func (f ruleFailure) String() string {
	if f.idx < 0 {
		return fmt.Sprintf("%s: not evaluated to a failure (it may have succeeded with a value other than the one required, or was not reached)", f.rule.label)
	}
	e := f.rule.exprs[f.idx]
	return fmt.Sprintf("%s: condition %d of %d failed at line %d: %s", f.rule.label, f.idx+1, len(f.rule.exprs), e.row, e.text)
}

// traceRun re-runs pq with tracing and rule indexing off (so that every
// rule body is tried) and returns the locations of failed expressions.
func (p *Policy) traceRun(ctx context.Context, pq rego.PreparedEvalQuery, input, data ast.Value) ([]*ast.Location, error) {
	tr := &failTracer{}
	if _, err := p.eval(ctx, pq, input, data, rego.EvalQueryTracer(tr), rego.EvalRuleIndexing(false)); err != nil {
		return nil, err
	}
	return tr.fails, nil
}

// failuresIn returns, for each body of the named rules, the furthest
// condition among fails.
func (p *Policy) failuresIn(fails []*ast.Location, names ...string) []ruleFailure {
	var res []ruleFailure
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			continue
		}
		seen[n] = true
		for _, b := range p.rules[n] {
			res = append(res, ruleFailure{rule: b, idx: -1})
		}
	}
	for _, loc := range fails {
		if loc.File != p.name {
			continue
		}
		for i := range res {
			idx := -1
			for j, e := range res[i].rule.exprs {
				if loc.Row >= e.row && loc.Row <= e.endRow && (loc.Row != e.row || loc.Col >= e.col) {
					idx = j
				}
			}
			res[i].idx = max(res[i].idx, idx)
		}
	}
	return res
}

// furthest keeps the failures that got furthest into their bodies: a rule
// whose first condition failed (typically "input.snp" for a sample
// input) is noise next to one that failed later.
func furthest(fs []ruleFailure) []ruleFailure {
	best := -1
	for _, f := range fs {
		best = max(best, f.idx)
	}
	var out []ruleFailure
	for _, f := range fs {
		if f.idx == best {
			out = append(out, f)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].rule.line < out[j].rule.line })
	return out
}
