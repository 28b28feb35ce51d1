package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kbsProcess is a coffer-kbs binary started for the benchmark, with its own
// data directory, configuration and log in a temporary directory.
type kbsProcess struct {
	cmd     *exec.Cmd
	url     string
	tmp     string
	dataDir string
	logPath string
	exited  chan struct{} // closed when the process has been reaped
	waitErr error
}

// startTimeout bounds the server's start-up: generating the simulated SNP
// chip (two RSA-4096 keys) takes a few seconds on a slow machine.
const startTimeout = 2 * time.Minute

// startKBS starts bin/coffer-kbs --dev --insecure-http on a free loopback
// port with a fresh data directory and waits for /healthz. sessionsMax > 0
// is written to a --config file as [sessions] max. On error everything it
// created is removed.
func startKBS(ctx context.Context, bin string, sessionsMax int) (*kbsProcess, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("coffer-kbs binary %s is missing or not executable: run `make build` (or ./bench/kbs/run.sh) or pass -kbs", abs)
	}
	tmp, err := os.MkdirTemp("", "coffer-bench-kbs-")
	if err != nil {
		return nil, fmt.Errorf("create temporary directory: %w", err)
	}
	var lastErr error
	// The free port is found by binding and closing it, so another process
	// can take it before the server binds: retry a few times.
	for attempt := range 3 {
		p, err := startKBSOnce(ctx, abs, tmp, attempt, sessionsMax)
		if err == nil {
			return p, nil
		}
		lastErr = err
		if ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	os.RemoveAll(tmp)
	return nil, lastErr
}

func startKBSOnce(ctx context.Context, bin, tmp string, attempt, sessionsMax int) (*kbsProcess, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	p := &kbsProcess{
		url:     "http://" + addr,
		tmp:     tmp,
		dataDir: filepath.Join(tmp, fmt.Sprintf("data%d", attempt)),
		logPath: filepath.Join(tmp, fmt.Sprintf("coffer-kbs%d.log", attempt)),
		exited:  make(chan struct{}),
	}
	args := []string{"--dev", "--insecure-http", "--data-dir", p.dataDir, "--listen", addr}
	if sessionsMax > 0 {
		conf := filepath.Join(tmp, "coffer-kbs.toml")
		if err := os.WriteFile(conf, fmt.Appendf(nil, "[sessions]\nmax = %d\n", sessionsMax), 0o644); err != nil {
			return nil, fmt.Errorf("write the server configuration: %w", err)
		}
		args = append(args, "--config", conf)
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, fmt.Errorf("create the server log: %w", err)
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Own process group, so a terminal's Ctrl-C reaches only the benchmark,
	// which then stops the server itself; killed if the benchmark dies.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	if err := p.waitHealthy(ctx); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// freeLoopbackAddr returns 127.0.0.1:<a port that was free a moment ago>.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free loopback port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

func (p *kbsProcess) waitHealthy(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	defer hc.CloseIdleConnections()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+"/healthz", nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.exited:
			return fmt.Errorf("coffer-kbs exited during start-up (%v): %s", p.waitErr, p.logTail(2048))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("coffer-kbs did not answer %s/healthz within %s: %s", p.url, startTimeout, p.logTail(2048))
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}

// logTail returns the end of the server's log, for error messages.
func (p *kbsProcess) logTail(n int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return "log " + p.logPath + " ends with:\n" + string(bytes.TrimSpace(b))
}

// cpuTime returns the CPU time the server has used.
func (p *kbsProcess) cpuTime() (cpuTimes, error) {
	return procCPUTime(p.cmd.Process.Pid)
}

// stop sends SIGTERM (the server shuts down gracefully), waits up to 10 s,
// then kills it; the temporary directory is removed in any case.
func (p *kbsProcess) stop() error {
	defer os.RemoveAll(p.tmp)
	if p.cmd.Process == nil {
		return nil
	}
	select {
	case <-p.exited:
		return fmt.Errorf("coffer-kbs exited before the end of the benchmark (%v)", p.waitErr)
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(10 * time.Second):
		p.kill()
		return errors.New("coffer-kbs did not stop within 10 s of SIGTERM; killed it")
	}
}

// kill kills the server and waits for it.
func (p *kbsProcess) kill() {
	if p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// cpuTimes are a process's user and system CPU time.
type cpuTimes struct{ user, sys time.Duration }

func (c cpuTimes) total() time.Duration { return c.user + c.sys }

// procCPUTime reads utime and stime of a process from /proc/<pid>/stat.
func procCPUTime(pid int) (cpuTimes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}, fmt.Errorf("read the server's CPU time: %w", err)
	}
	// The command name (field 2) may hold spaces: fields start after ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return cpuTimes{}, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return cpuTimes{user: ticks(ut), sys: ticks(st)}, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func ticks(n uint64) time.Duration { return time.Duration(n) * time.Second / clockTicks }

// selfCPUTime is the CPU time (user + system) of the benchmark process.
func selfCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hostCPU is a /proc/stat snapshot of all CPUs: busy (user, nice,
// system, irq, softirq), steal (the hypervisor ran something else) and
// total time.
type hostCPU struct{ busy, steal, total time.Duration }

func readHostCPU() hostCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return hostCPU{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return hostCPU{}
	}
	var h hostCPU
	// user nice system idle iowait irq softirq steal; guest time is
	// already counted in user.
	for i, s := range f[1:9] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			continue
		}
		h.total += ticks(v)
		switch i {
		case 3, 4: // idle, iowait
		case 7:
			h.steal += ticks(v)
		default:
			h.busy += ticks(v)
		}
	}
	return h
}

func (h hostCPU) sub(o hostCPU) hostCPU {
	return hostCPU{busy: h.busy - o.busy, steal: h.steal - o.steal, total: h.total - o.total}
}

// quietBusy is the host CPU share above which a case waits (-quiet-wait).
const quietBusy = 0.15

// hostBusy measures the share of all CPUs busy over interval.
func hostBusy(ctx context.Context, interval time.Duration) float64 {
	a := readHostCPU()
	sleepUntil(ctx, time.Now().Add(interval))
	d := readHostCPU().sub(a)
	if d.total <= 0 {
		return 0
	}
	return d.busy.Seconds() / d.total.Seconds()
}

// waitQuietCPU waits up to maxWait for the host's CPUs to be less than
// quietBusy busy (measured over a second; the benchmark is idle then), and
// returns the last measurement and the time waited.
func waitQuietCPU(ctx context.Context, maxWait time.Duration, progress io.Writer) (float64, time.Duration) {
	start := time.Now()
	for {
		b := hostBusy(ctx, time.Second)
		if b < quietBusy || time.Since(start) >= maxWait || ctx.Err() != nil {
			if b >= quietBusy && maxWait > 0 && ctx.Err() == nil {
				fmt.Fprintf(progress, "host CPU still %.0f%% busy after waiting %s; measuring anyway (recorded)\n", 100*b, maxWait)
			}
			return b, time.Since(start)
		}
		fmt.Fprintf(progress, "host CPU %.0f%% busy (other processes): waiting for < %.0f%%\n", 100*b, 100*quietBusy)
		sleepUntil(ctx, time.Now().Add(2*time.Second))
	}
}

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() (string, float64) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?", 0
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?", 0
	}
	one, _ := strconv.ParseFloat(f[0], 64)
	return strings.Join(f[:3], " "), one
}

// waitForQuiet waits up to maxWait for the 1-minute load average to drop to
// maxLoad, and returns how long it waited.
func waitForQuiet(ctx context.Context, maxLoad float64, maxWait time.Duration, progress io.Writer) time.Duration {
	if maxLoad <= 0 {
		return 0
	}
	start := time.Now()
	for {
		s, one := loadAvg()
		if one <= maxLoad {
			return time.Since(start)
		}
		if time.Since(start) >= maxWait {
			fmt.Fprintf(progress, "load average still %s after %s; running anyway (recorded)\n", s, maxWait)
			return time.Since(start)
		}
		fmt.Fprintf(progress, "load average %s > %.2f: other work is running; waiting (up to %s)\n", s, maxLoad, maxWait-time.Since(start).Round(time.Second))
		select {
		case <-ctx.Done():
			return time.Since(start)
		case <-time.After(15 * time.Second):
		}
	}
}
