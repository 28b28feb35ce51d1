package policy

import (
	"context"
	"testing"
)

func BenchmarkCompileDefaultCPU(b *testing.B) {
	src := mustDefaultT(b, DefaultCPU)
	for b.Loop() {
		if _, err := Compile(DefaultCPU, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppraisalSampleAffirming(b *testing.B) {
	p := compile(b, DefaultCPU, mustDefaultT(b, DefaultCPU), WithReferenceValues(trusteeRVs.query), WithAppraisalCache(0))
	in := jsonMap(b, sampleInput)
	ctx := context.Background()
	for b.Loop() {
		a, err := p.EvaluateAppraisal(ctx, in)
		if err != nil || a.Status != StatusAffirming {
			b.Fatal(a, err)
		}
	}
}

func BenchmarkAppraisalSNPAffirming(b *testing.B) {
	p := compile(b, DefaultCPU, mustDefaultT(b, DefaultCPU), WithReferenceValues(snpRVs.query), WithAppraisalCache(0))
	in := snpInput(b, nil)
	ctx := context.Background()
	for b.Loop() {
		a, err := p.EvaluateAppraisal(ctx, in)
		if err != nil || a.Status != StatusAffirming {
			b.Fatal(a, err)
		}
	}
}

// BenchmarkAppraisalSampleExplained is the non-affirming path: evaluation
// plus the traced re-run that explains it.
func BenchmarkAppraisalSampleExplained(b *testing.B) {
	p := compile(b, DefaultCPU, mustDefaultT(b, DefaultCPU), WithReferenceValues(rvMap{}.query), WithAppraisalCache(0))
	in := jsonMap(b, sampleInput)
	ctx := context.Background()
	for b.Loop() {
		a, err := p.EvaluateAppraisal(ctx, in)
		if err != nil || a.Status != StatusContraindicated {
			b.Fatal(a, err)
		}
	}
}

// BenchmarkAppraisalCached is a repeated appraisal of the same claims
// (another nonce and key each time): a cache hit after the reference
// values were looked up again.
func BenchmarkAppraisalCached(b *testing.B) {
	for _, tc := range []struct {
		name string
		rvs  rvMap
		in   func() map[string]any
	}{
		{"sample", trusteeRVs, func() map[string]any { return jsonMap(b, sampleInput) }},
		{"snp", snpRVs, func() map[string]any { return snpInput(b, nil) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := compile(b, DefaultCPU, mustDefaultT(b, DefaultCPU), WithReferenceValues(tc.rvs.query))
			in := tc.in()
			ctx := context.Background()
			for b.Loop() {
				a, err := p.EvaluateAppraisal(ctx, in)
				if err != nil || a.Status != StatusAffirming {
					b.Fatal(a, err)
				}
			}
		})
	}
}

func BenchmarkResourceAllow(b *testing.B) {
	p := compile(b, ResourceDefault, mustDefaultT(b, ResourceDefault))
	in := token("snp", StatusAffirming, nil)
	ctx := context.Background()
	for b.Loop() {
		d, err := p.EvaluateAllow(ctx, in, resourceData)
		if err != nil || !d.Allow {
			b.Fatal(d, err)
		}
	}
}

func BenchmarkResourceDenyWithReasons(b *testing.B) {
	p := compile(b, ResourceDefault, mustDefaultT(b, ResourceDefault))
	in := token("sample", StatusAffirming, nil)
	ctx := context.Background()
	for b.Loop() {
		d, err := p.EvaluateAllow(ctx, in, resourceData)
		if err != nil || d.Allow {
			b.Fatal(d, err)
		}
	}
}

func BenchmarkResourceDenyTraced(b *testing.B) {
	p := compile(b, "trustee-test", `package policy
default allow = false
allow {
	data["resource-path"][0] == "one"
	input.submods.cpu0["ear.veraison.annotated-evidence"]["sample"]
}`)
	in := token("snp", StatusAffirming, nil)
	ctx := context.Background()
	for b.Loop() {
		d, err := p.EvaluateAllow(ctx, in, resourceData)
		if err != nil || d.Allow {
			b.Fatal(d, err)
		}
	}
}

func BenchmarkResourceAllowParallel(b *testing.B) {
	p := compile(b, ResourceDefault, mustDefaultT(b, ResourceDefault))
	in := token("snp", StatusAffirming, nil)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, err := p.EvaluateAllow(ctx, in, resourceData)
			if err != nil || !d.Allow {
				b.Error(d, err)
				return
			}
		}
	})
}
