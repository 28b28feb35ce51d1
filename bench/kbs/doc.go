// Command kbs benchmarks coffer-kbs, the relying party, in one run: full
// RCAR handshakes (auth + attest + get-resource on a new session each;
// each client worker keeps one client and TEE key pair, as a guest does
// per boot, or, with -fresh-client, a new one per handshake) against the
// real coffer-kbs binary on loopback, at 1 and 64 concurrent clients, for
// the sample TEE and for simulated SEV-SNP; and the crypto floor, the same
// key generation, evidence, verification, token signing and JWE work done
// in-process without HTTP, sessions or policy. With -transport-floors (the
// default) it also measures, for the sample TEE at the highest client
// count, the transport floors: the crypto floor's handshake split between
// two processes over its three loopback round trips, as raw
// length-prefixed messages (tcp) and as net/http handlers (http), to show
// how much of the crypto floor's rate the transport alone leaves for the
// KBS's own work. It prints throughput, p50/p99 latency, the ratio to the
// floor, the CPU each side used and PASS/MISS against the project's
// targets, as a table or as JSON.
//
// With -cpuprofile it also runs the server in-process (server.Open behind a
// loopback listener in the benchmark process) under the same load and
// writes a CPU profile per TEE, with the server's goroutines labelled, and
// prints the server's hot spots.
//
// It owns nothing outside its temporary directories: the server gets a
// fresh data directory and a free loopback port, and the server process and
// the directories are removed on exit, also on Ctrl-C. Run it with
// ./bench/kbs/run.sh [-d 10s] [-json] [-cpuprofile kbs.pprof].
package main
