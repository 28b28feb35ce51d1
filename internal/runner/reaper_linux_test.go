package runner

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The Reaper reaps every child of the process (wait4(-1)), so these tests
// start children with os.StartProcess and never wait for them any other
// way; no other test of this package starts a child process.

// startChild starts argv with stdio on /dev/null and returns its pid.
func startChild(t *testing.T, argv ...string) int {
	t.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	p, err := os.StartProcess(argv[0], argv, &os.ProcAttr{Files: []*os.File{null, null, null}})
	if err != nil {
		t.Fatal(err)
	}
	pid := p.Pid
	// Drop the handle (a pidfd) without waiting: the reaper owns wait(2).
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitZombie blocks until pid has exited without reaping it.
func waitZombie(t *testing.T, pid int) {
	t.Helper()
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("waitid(%d): %v", pid, err)
		}
		return
	}
}

func recvExit(t *testing.T, ch <-chan Exit) Exit {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no exit delivered within 10s")
		return Exit{}
	}
}

// runReaper starts r.Run and stops it (and waits for it) at the end of the test.
func runReaper(t *testing.T, r *Reaper) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		r.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Reaper.Run did not return after its context was canceled")
		}
	})
}

func TestReaperDeliversExits(t *testing.T) {
	r := NewReaper()
	runReaper(t, r)
	tests := []struct {
		name   string
		argv   []string
		kill   unix.Signal
		status int
		signal int
	}{
		{"true", []string{"/bin/true"}, 0, 0, 0},
		{"exit 3", []string{"/bin/sh", "-c", "exit 3"}, 0, 3, 0},
		{"exit 255", []string{"/bin/sh", "-c", "exit 255"}, 0, 255, 0},
		{"self TERM", []string{"/bin/sh", "-c", "kill -TERM $$"}, 0, 128 + 15, 15},
		{"SIGKILL", []string{"/bin/sleep", "30"}, unix.SIGKILL, 128 + 9, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			pid := startChild(t, tt.argv...)
			ch := r.Watch(pid)
			if tt.kill != 0 {
				if err := unix.Kill(pid, tt.kill); err != nil {
					t.Fatal(err)
				}
			}
			e := recvExit(t, ch)
			if e.Pid != pid || e.Status != tt.status || e.Signal != tt.signal {
				t.Fatalf("exit = %+v, want pid %d status %d signal %d", e, pid, tt.status, tt.signal)
			}
			if e.At.Before(before) || e.At.After(time.Now()) {
				t.Fatalf("exit time %v is not between start %v and now", e.At, before)
			}
			// Exactly one delivery.
			select {
			case e2, ok := <-ch:
				t.Fatalf("second receive: %+v %v", e2, ok)
			default:
			}
		})
	}
}

func TestReaperManyConcurrentChildren(t *testing.T) {
	r := NewReaper()
	runReaper(t, r)
	const n = 20
	chans := map[int]<-chan Exit{}
	for i := 0; i < n; i++ {
		pid := startChild(t, "/bin/sh", "-c", "exit "+string(rune('0'+i%10)))
		chans[pid] = r.Watch(pid)
	}
	for pid, ch := range chans {
		e := recvExit(t, ch)
		if e.Pid != pid || e.Signal != 0 || e.Status < 0 || e.Status > 9 {
			t.Fatalf("exit of %d = %+v", pid, e)
		}
	}
}

func TestReaperKeepsExitReapedBeforeWatch(t *testing.T) {
	r := NewReaper() // not running: reap by hand
	pid := startChild(t, "/bin/sh", "-c", "exit 7")
	waitZombie(t, pid)
	r.reapAll()
	// The zombie is gone...
	var ws unix.WaitStatus
	if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err != unix.ECHILD {
		t.Fatalf("wait4(%d) after reapAll = %d, %v; want ECHILD", pid, got, err)
	}
	// ...and its exit is handed to the first Watch at once.
	ch := r.Watch(pid)
	select {
	case e := <-ch:
		if e.Pid != pid || e.Status != 7 || e.Signal != 0 {
			t.Fatalf("exit = %+v", e)
		}
	default:
		t.Fatal("Watch after the exit was reaped did not deliver it at once")
	}
	// It is delivered once: a second Watch waits for a new process.
	select {
	case e := <-r.Watch(pid):
		t.Fatalf("second Watch got %+v", e)
	default:
	}
}

func TestReaperReapAllWithoutChildren(t *testing.T) {
	r := NewReaper()
	r.reapAll() // ECHILD: returns at once
	if len(r.unclaimed) != 0 || len(r.waiters) != 0 {
		t.Fatalf("reapAll without children changed state: %+v", r)
	}
}

func TestReaperUnclaimedIsBounded(t *testing.T) {
	r := NewReaper()
	// Pids far above any real pid_max: only deliver is exercised.
	const base = 1 << 30
	for i := 0; i < maxUnclaimed+10; i++ {
		r.deliver(Exit{Pid: base + i, Status: i % 256})
	}
	if len(r.unclaimed) != maxUnclaimed || len(r.order) != maxUnclaimed {
		t.Fatalf("unclaimed %d, order %d; want %d", len(r.unclaimed), len(r.order), maxUnclaimed)
	}
	// The oldest ones were dropped.
	select {
	case e := <-r.Watch(base):
		t.Fatalf("oldest exit was kept: %+v", e)
	default:
	}
	select {
	case e := <-r.Watch(base + maxUnclaimed + 9):
		if e.Status != (maxUnclaimed+9)%256 {
			t.Fatalf("newest exit = %+v", e)
		}
	default:
		t.Fatal("newest exit was dropped")
	}
	// A registered waiter is served directly and not kept as unclaimed.
	ch := r.Watch(base - 1)
	r.deliver(Exit{Pid: base - 1, Status: 5})
	if e := recvExit(t, ch); e.Status != 5 {
		t.Fatalf("waiter got %+v", e)
	}
	if _, ok := r.unclaimed[base-1]; ok {
		t.Fatal("exit delivered to a waiter was also kept as unclaimed")
	}
	if _, ok := r.waiters[base-1]; ok {
		t.Fatal("waiter not removed after delivery")
	}
}

// TestReaperReusedPidEviction shows a bookkeeping bug: Watch removes a
// claimed exit from r.unclaimed but not from r.order, so the stale order
// entry later evicts a newer unclaimed exit of the same (reused) pid
// instead of the oldest one.
func TestReaperReusedPidEviction(t *testing.T) {
	r := NewReaper()
	const pid = 1 << 30
	r.deliver(Exit{Pid: pid, Status: 1}) // exits before Watch...
	<-r.Watch(pid)                       // ...and is claimed.
	for i := 1; i < maxUnclaimed; i++ {
		r.deliver(Exit{Pid: pid + i})
	}
	r.deliver(Exit{Pid: pid, Status: 2}) // the pid is reused and exits again
	select {
	case e := <-r.Watch(pid):
		if e.Status != 2 {
			t.Fatalf("got %+v", e)
		}
	default:
		t.Fatal("the newest exit was evicted by a stale order entry")
	}
}
