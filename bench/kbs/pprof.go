package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// cpuSample is one stack of a CPU profile: its functions, leaf first, the
// CPU time it stands for and its labels.
type cpuSample struct {
	funcs  []string
	cpu    time.Duration
	labels map[string]string
}

// readCPUProfile decodes a runtime/pprof CPU profile (gzipped
// perftools.profiles.Profile protobuf) into samples. It reads only what the
// analysis needs: samples with their labels, locations, functions and the
// string table.
func readCPUProfile(path string) ([]cpuSample, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s is not a gzipped profile: %w", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	type label struct{ key, str int64 }
	type rawSample struct {
		locs   []uint64
		values []int64
		labels []label
	}
	var (
		samples    []rawSample
		strs       []string
		locFuncs   = map[uint64][]uint64{} // location id -> function ids, leaf first
		funcName   = map[uint64]int64{}    // function id -> string index
		sampleType []int64                 // type string index per value
	)
	err = eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1: // sample_type
			return eachField(v, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
				if n == 1 {
					sampleType = append(sampleType, int64(x))
				}
				return nil
			})
		case 2: // sample
			var s rawSample
			err := eachField(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
				switch n {
				case 1:
					s.locs = appendVarints(s.locs, t, v, x)
				case 2:
					for _, u := range appendVarints(nil, t, v, x) {
						s.values = append(s.values, int64(u))
					}
				case 3:
					var l label
					err := eachField(v, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
						switch n {
						case 1:
							l.key = int64(x)
						case 2:
							l.str = int64(x)
						}
						return nil
					})
					if err != nil {
						return err
					}
					s.labels = append(s.labels, l)
				}
				return nil
			})
			samples = append(samples, s)
			return err
		case 4: // location
			var id uint64
			var fns []uint64
			err := eachField(v, func(n protowire.Number, _ protowire.Type, v []byte, x uint64) error {
				switch n {
				case 1:
					id = x
				case 4: // line
					return eachField(v, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
						if n == 1 {
							fns = append(fns, x)
						}
						return nil
					})
				}
				return nil
			})
			locFuncs[id] = fns
			return err
		case 5: // function
			var id uint64
			var name int64
			err := eachField(v, func(n protowire.Number, _ protowire.Type, _ []byte, x uint64) error {
				switch n {
				case 1:
					id = x
				case 2:
					name = int64(x)
				}
				return nil
			})
			funcName[id] = name
			return err
		case 6: // string_table
			strs = append(strs, string(v))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	str := func(i int64) string {
		if i < 0 || int(i) >= len(strs) {
			return ""
		}
		return strs[i]
	}
	// CPU profiles have [samples/count, cpu/nanoseconds].
	cpuIdx := -1
	for i, t := range sampleType {
		if str(t) == "cpu" {
			cpuIdx = i
		}
	}
	if cpuIdx < 0 {
		return nil, fmt.Errorf("%s is not a CPU profile (no cpu sample type)", path)
	}
	out := make([]cpuSample, 0, len(samples))
	for _, s := range samples {
		if cpuIdx >= len(s.values) {
			continue
		}
		cs := cpuSample{cpu: time.Duration(s.values[cpuIdx])}
		for _, l := range s.locs {
			for _, f := range locFuncs[l] {
				cs.funcs = append(cs.funcs, str(funcName[f]))
			}
		}
		if len(s.labels) > 0 {
			cs.labels = map[string]string{}
			for _, l := range s.labels {
				cs.labels[str(l.key)] = str(l.str)
			}
		}
		out = append(out, cs)
	}
	return out, nil
}

// eachField calls fn for every field of a protobuf message: v for
// length-delimited fields, x for varints (fixed-size fields are skipped).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("bad protobuf field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.VarintType || typ == protowire.BytesType {
			if err := fn(num, typ, v, x); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendVarints appends a repeated varint field, packed or not.
func appendVarints(dst []uint64, typ protowire.Type, v []byte, x uint64) []uint64 {
	if typ == protowire.VarintType {
		return append(dst, x)
	}
	for len(v) > 0 {
		u, n := protowire.ConsumeVarint(v)
		if n < 0 {
			break
		}
		dst = append(dst, u)
		v = v[n:]
	}
	return dst
}

// funcCost is a function's share of a profile.
type funcCost struct {
	Name string        `json:"name"`
	Flat time.Duration `json:"-"`
	Cum  time.Duration `json:"-"`
}

// componentCost is the inclusive CPU of the stacks matching a pattern.
type componentCost struct {
	Name    string        `json:"name"`
	Pattern string        `json:"pattern"`
	CPU     time.Duration `json:"-"`
}

// profileSummary is the analysis of one in-process profile.
type profileSummary struct {
	File string
	// Total CPU in the profile, and by the goroutine label side.
	Total, Server, Client, Unlabeled time.Duration
	// Truncated is the server CPU whose stacks were cut at the profiler's
	// depth limit (deep Rego evaluation): those samples do not show which
	// handler they belong to.
	Truncated time.Duration
	// TopFlat and TopCum are the server goroutines' hottest functions.
	TopFlat, TopCum []funcCost
	// Components are inclusive shares of the server goroutines' CPU.
	Components []componentCost
	// UnlabeledTop are the hottest leaf functions of unlabeled goroutines
	// (the garbage collector's workers, the store's writer, the runtime),
	// UnlabeledComponents their inclusive split.
	UnlabeledTop        []funcCost
	UnlabeledComponents []componentCost
}

// unlabeledComponents are the parts of the unlabelled goroutines' work
// reported inclusively: the store's writer goroutine does the server's
// bbolt commits (the audit log), the GC workers collect for both sides.
var unlabeledComponents = []struct{ name, pattern string }{
	{"store writer goroutine: bbolt commits", `store\.\(\*Bolt\)\.writer$`},
	{"  of which fdatasync", `bbolt\.fdatasync$`},
	{"GC background workers", `^runtime\.gcBgMarkWorker$`},
}

// serverComponents are the parts of the server's work reported
// inclusively (a stack counts for every component it matches).
var serverComponents = []struct{ name, pattern string }{
	{"POST /auth handler", `server\.\(\*Server\)\.handleAuth$`},
	{"POST /attest handler", `server\.\(\*Server\)\.handleAttest$`},
	{"GET /resource handler", `server\.\(\*Server\)\.handleGetResource$`},
	{"evidence verification", `internal/attestation\.(sampleVerifier|\(\*SNPVerifier\))\.Verify$`},
	{"SNP evidence JSON parsing", `internal/tee\.ParseSNPEvidence$`},
	{"attestation request JSON decoding", `protocol\.\(\*Attestation\)\.UnmarshalJSON$`},
	{"appraisal policy (Rego)", `internal/policy\.\(\*Policy\)\.EvaluateAppraisal$`},
	{"resource policy (Rego)", `internal/policy\.\(\*Policy\)\.EvaluateAllow$`},
	{"all OPA/Rego code", `^github\.com/open-policy-agent/opa/`},
	{"query_reference_value builtin", `policy\.\(\*Policy\)\.queryReferenceValue$`},
	{"RVPS lookup (store read + JSON decode)", `rvps\.\(\*Service\)\.Get$`},
	{"Rego input conversion (InterfaceToValue)", `ast\.InterfaceToValue$`},
	{"EAR token signing", `ear\.\(\*Signer\)\.Sign$`},
	{"EAR token verification + claims map", `attestation\.\(\*Service\)\.VerifyToken$`},
	{"token ES256 signature check", `ear\.\(\*Verifier\)\.verifySignature$`},
	{"JWE encryption", `protocol\.EncryptResponse$`},
	{"tee-pubkey from claims", `server\.teePubKeyFromClaims$`},
	{"audit (store append + log line)", `server\.\(\*Server\)\.audit$`},
	{"bbolt store (reads, write queue)", `^go\.etcd\.io/bbolt`},
	{"log/slog", `^log/slog\.`},
	{"Prometheus metrics", `prometheus`},
	{"encoding/json (all)", `^encoding/json\.`},
	{"ECDSA/ECDH/P-256/P-384 math", `^crypto/(ecdsa|ecdh|elliptic|internal/fips140/(ecdsa|ecdh|nistec|bigmod))`},
	{"response JSON encoding (writeJSON)", `server\.writeJSON$`},
	{"net/http request parsing + response flush", `^net/http\.\(\*conn\)\.readRequest$|^net/http\.\(\*response\)\.finishRequest$`},
	{"goroutine stack growth (newstack)", `^runtime\.newstack$`},
	{"memory allocation (mallocgc)", `^runtime\.mallocgc$`},
	{"GC assist", `^runtime\.gcAssistAlloc`},
	{"syscalls (network I/O)", `^(syscall|internal/runtime/syscall)\.`},
}

// maxCPUProfStack is the runtime's depth limit of CPU profile stacks, in
// frames with inlined calls expanded (runtime/cpuprof.go); deeper stacks
// lose their outermost frames.
const maxCPUProfStack = 64

// analyzeProfile reads a profile written with the side labels.
func analyzeProfile(path string, top int) (*profileSummary, error) {
	samples, err := readCPUProfile(path)
	if err != nil {
		return nil, err
	}
	if len(samples) == 0 {
		return nil, errors.New("the profile has no samples")
	}
	ps := &profileSummary{File: path}
	flat, cum := map[string]time.Duration{}, map[string]time.Duration{}
	unFlat := map[string]time.Duration{}
	res := make([]*regexp.Regexp, len(serverComponents))
	for i, c := range serverComponents {
		res[i] = regexp.MustCompile(c.pattern)
		ps.Components = append(ps.Components, componentCost{Name: c.name, Pattern: c.pattern})
	}
	unRes := make([]*regexp.Regexp, len(unlabeledComponents))
	for i, c := range unlabeledComponents {
		unRes[i] = regexp.MustCompile(c.pattern)
		ps.UnlabeledComponents = append(ps.UnlabeledComponents, componentCost{Name: c.name, Pattern: c.pattern})
	}
	for _, s := range samples {
		ps.Total += s.cpu
		switch s.labels["side"] {
		case "client":
			ps.Client += s.cpu
			continue
		case "server":
			ps.Server += s.cpu
		default:
			ps.Unlabeled += s.cpu
			if len(s.funcs) > 0 {
				unFlat[s.funcs[0]] += s.cpu
			}
			for i, re := range unRes {
				for _, f := range s.funcs {
					if re.MatchString(f) {
						ps.UnlabeledComponents[i].CPU += s.cpu
						break
					}
				}
			}
			continue
		}
		if len(s.funcs) > 0 {
			flat[s.funcs[0]] += s.cpu
			if len(s.funcs) >= maxCPUProfStack {
				ps.Truncated += s.cpu
			}
		}
		seen := map[string]bool{}
		for _, f := range s.funcs {
			if !seen[f] {
				seen[f] = true
				cum[f] += s.cpu
			}
		}
		for i, re := range res {
			for f := range seen {
				if re.MatchString(f) {
					ps.Components[i].CPU += s.cpu
					break
				}
			}
		}
	}
	for _, e := range topCosts(flat, top) {
		ps.TopFlat = append(ps.TopFlat, funcCost{Name: e.name, Flat: e.d, Cum: cum[e.name]})
	}
	for _, e := range topCosts(cum, top) {
		ps.TopCum = append(ps.TopCum, funcCost{Name: e.name, Flat: flat[e.name], Cum: e.d})
	}
	for _, e := range topCosts(unFlat, 5) {
		ps.UnlabeledTop = append(ps.UnlabeledTop, funcCost{Name: e.name, Flat: e.d})
	}
	return ps, nil
}

type namedCost struct {
	name string
	d    time.Duration
}

// topCosts returns the n largest entries of m, skipping the goroutine
// entry points and wrappers that every server stack has.
func topCosts(m map[string]time.Duration, n int) []namedCost {
	out := make([]namedCost, 0, len(m))
	for name, d := range m {
		switch name {
		case "runtime.goexit", "runtime/pprof.Do", "net/http.(*conn).serve", "net/http.serverHandler.ServeHTTP",
			"main.runProfiled.func1":
			continue
		}
		out = append(out, namedCost{name, d})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].d != out[j].d {
			return out[i].d > out[j].d
		}
		return out[i].name < out[j].name
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}
