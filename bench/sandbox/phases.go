package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// logLine is one slog text-handler line (logfmt: key=value, values quoted
// when needed).
type logLine struct {
	t   time.Time
	msg string
	kv  map[string]string
}

// parseLogfmt splits a logfmt line into its keys and (unquoted) values.
func parseLogfmt(line string) map[string]string {
	kv := map[string]string{}
	s := strings.TrimSpace(line)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			// A bare word: skip it.
			if sp < 0 {
				break
			}
			s = strings.TrimLeft(s[sp:], " ")
			continue
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				val, s = s, ""
			} else {
				val, _ = strconv.Unquote(q)
				s = s[len(q):]
			}
		} else if sp := strings.IndexByte(s, ' '); sp >= 0 {
			val, s = s[:sp], s[sp:]
		} else {
			val, s = s, ""
		}
		kv[key] = val
		s = strings.TrimLeft(s, " ")
	}
	return kv
}

// parseLog returns the lines of a slog text log that have a time and msg.
func parseLog(text string) []logLine {
	var out []logLine
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		kv := parseLogfmt(sc.Text())
		t, err := time.Parse(time.RFC3339Nano, kv["time"])
		if err != nil || kv["msg"] == "" {
			continue
		}
		out = append(out, logLine{t: t, msg: kv["msg"], kv: kv})
	}
	return out
}

// find returns the first line with msg for which match (if given) holds.
func find(lines []logLine, msg string, match func(map[string]string) bool) (logLine, bool) {
	for _, l := range lines {
		if l.msg == msg && (match == nil || match(l.kv)) {
			return l, true
		}
	}
	return logLine{}, false
}

// unstep moves the agent's log lines that follow its "guest clock set"
// line back onto the clock before the step, so that one offset aligns
// every line with the host's clock.
func unstep(lines []logLine) []logLine {
	out := make([]logLine, len(lines))
	copy(out, lines)
	var step time.Duration
	for i, l := range out {
		if l.msg == "guest clock set" {
			step, _ = time.ParseDuration(l.kv["step"])
		}
		out[i].t = l.t.Add(-step)
	}
	return out
}

// vserportOpen matches the QMP event of the guest opening a virtio-serial
// port (vport0 is the agent API port, vport1 the agent's log port: the
// order in which the sandbox configures them).
func vserportOpen(id string) func(map[string]string) bool {
	return func(kv map[string]string) bool {
		if kv["event"] != "VSERPORT_CHANGE" {
			return false
		}
		var d struct {
			Open bool   `json:"open"`
			ID   string `json:"id"`
		}
		return json.Unmarshal([]byte(kv["data"]), &d) == nil && d.Open && d.ID == id
	}
}

func qmpEvent(name string) func(map[string]string) bool {
	return func(kv map[string]string) bool { return kv["event"] == name }
}

// phaseDef is one step of a coffer run: the time from the previous event
// found to this one.
type phaseDef struct {
	key, label string
}

// phaseDefs lists the events of a `coffer run --rm -- true` in the order
// they happen; each phase ends at its event.
var phaseDefs = []phaseDef{
	{"rootfs", "coffer CLI start, guest manifest, rootfs image build"},
	{"qmp", "accelerator choice, QEMU exec until QMP answers"},
	{"kernel0", "firmware, kernel + initrd load, kernel decompression (guest clock 0)"},
	{"agentexec", "kernel init, initramfs unpack, agent exec + early mounts"},
	{"agentstart", "channel module loading + log port (agent 'modules'; the pod's other modules load in the background)"},
	{"agentready", "agent init: cgroups, API port listen"},
	{"podready", "host connects to the agent, Check RPC"},
	{"sandbox", "CreateSandbox RPC"},
	{"ccreated", "CreateContainer: wait for the pod modules, rootfs disk mount, overlay, init stage (agent re-exec)"},
	{"cstarted", "container start (in the same CreateContainer call for coffer run)"},
	{"destroyed", "`true` runs, WaitProcess, DestroySandbox RPC (only when the pod has volumes)"},
	{"shutdown", "`true` runs, WaitProcess; QMP quit (or the guest's power off) until QEMU reports SHUTDOWN"},
	{"qemuexit", "QEMU exit"},
	{"exit", "host cleanup (sockets, pod dir), coffer exit"},
}

// phaseSample is one run's split.
type phaseSample struct {
	// Phases by phaseDef key; a missing event merges its phase into the
	// next one found.
	Phases map[string]time.Duration
	// Mkfs is the "took" of the rootfs image build, part of "rootfs".
	Mkfs time.Duration
	// Modules is the agent's module-loading time as it reports it.
	Modules time.Duration
	// GuestUptime is the guest uptime when the agent logged its start.
	GuestUptime time.Duration
	Accel       string
	QEMUCmdline string
}

// splitRun turns the host log (coffer --log-level debug stderr) and the
// agent log of one run into phases. Guest times are moved onto the host
// clock by aligning the agent's "agent API ready" with QEMU's report of the
// guest opening the agent port (they happen within a few ms of each other).
func splitRun(start, end time.Time, hostLog, agentLog string) (*phaseSample, error) {
	host := parseLog(hostLog)
	guest := parseLog(agentLog)
	ev := map[string]time.Time{}
	ps := &phaseSample{Phases: map[string]time.Duration{}}

	if l, ok := find(host, "rootfs image built", nil); ok {
		ev["rootfs"] = l.t
		ps.Mkfs, _ = time.ParseDuration(l.kv["took"])
	}
	if l, ok := find(host, "accelerator chosen", nil); ok {
		ps.Accel = l.kv["accel"]
	}
	if l, ok := find(host, "qemu command line", nil); ok {
		ps.QEMUCmdline = l.kv["cmd"]
	}
	if l, ok := find(host, "qemu started", nil); ok {
		ev["qmp"] = l.t
		if ps.Accel == "" {
			ps.Accel = l.kv["accel"]
		}
	}
	if l, ok := find(host, "pod VM ready", nil); ok {
		ev["podready"] = l.t
	}
	if l, ok := find(host, "qmp event", qmpEvent("SHUTDOWN")); ok {
		ev["shutdown"] = l.t
	}
	if l, ok := find(host, "qemu exited", nil); ok {
		ev["qemuexit"] = l.t
	}
	if len(ev) == 0 {
		return nil, fmt.Errorf("no coffer debug log lines found (is --log-level debug honoured?)")
	}

	port, okPort := find(host, "qmp event", vserportOpen("vport0"))
	ready, okReady := find(guest, "agent API ready", nil)
	if okPort && okReady {
		offset := port.t.Sub(ready.t)
		// The agent steps the guest's clock to the host's at CreateSandbox
		// ("guest clock set", step=…): lines after it are on the new clock.
		guest = unstep(guest)
		onHost := func(t time.Time) time.Time { return t.Add(offset) }
		ev["agentready"] = port.t
		if l, ok := find(guest, "coffer-agent starting", nil); ok {
			ev["agentstart"] = onHost(l.t)
			if up, err := strconv.ParseFloat(l.kv["uptime"], 64); err == nil {
				ps.GuestUptime = time.Duration(up * float64(time.Second))
				ev["kernel0"] = onHost(l.t).Add(-ps.GuestUptime)
			}
			if m, err := time.ParseDuration(l.kv["modules"]); err == nil {
				ps.Modules = m
				ev["agentexec"] = onHost(l.t).Add(-m)
			}
		}
		for key, msg := range map[string]string{
			"sandbox": "sandbox created", "ccreated": "container created",
			"cstarted": "container started", "destroyed": "sandbox destroyed",
		} {
			if l, ok := find(guest, msg, nil); ok {
				ev[key] = onHost(l.t)
			}
		}
	}
	ev["exit"] = end

	prev := start
	for _, d := range phaseDefs {
		t, ok := ev[d.key]
		if !ok {
			continue
		}
		ps.Phases[d.key] = t.Sub(prev)
		prev = t
	}
	return ps, nil
}
