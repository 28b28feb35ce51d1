package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are coffer-kbs's Prometheus metrics, on a registry of its own
// (no global state).
type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	attestations *prometheus.CounterVec
	releases     *prometheus.CounterVec
	refused      *prometheus.CounterVec
	sessions     prometheus.GaugeFunc
}

func newMetrics(sessionCount func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_http_requests_total", Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kbs_http_request_duration_seconds", Help: "HTTP request latency by endpoint.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1},
		}, []string{"endpoint"}),
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_attestations_total", Help: "Attestations by TEE and outcome (success, failure): attestations of a session whose /attest was taken up. Requests refused before that are in kbs_refused_requests_total.",
		}, []string{"tee", "outcome"}),
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_resource_releases_total", Help: "Resource requests by outcome (released, denied, not_found).",
		}, []string{"outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_refused_requests_total", Help: "Requests refused before any session or token was established (bad /auth, /attest without a usable session, resource requests without a usable token or with a bad path), by endpoint.",
		}, []string{"endpoint"}),
		sessions: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kbs_sessions", Help: "Open RCAR sessions.",
		}, sessionCount),
	}
	m.reg.MustRegister(m.requests, m.latency, m.attestations, m.releases, m.refused, m.sessions,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
