package runner

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is how a process ended.
type Exit struct {
	Pid int
	// Status is the shell convention: the exit code, or 128+signal.
	Status int
	// Signal is non-zero when a signal killed the process.
	Signal int
	At     time.Time
}

// maxUnclaimed bounds exits kept for processes nobody has asked about
// (orphans re-parented to PID 1).
const maxUnclaimed = 1024

// Reaper reaps every child of the process (the agent is PID 1, so also
// every orphan in the guest) and hands exits to whoever waits for that pid.
// Nothing else in the agent may call wait(2).
type Reaper struct {
	mu        sync.Mutex
	waiters   map[int]chan Exit
	unclaimed map[int]Exit
	order     []int
}

// NewReaper returns a reaper; call Run to start reaping.
func NewReaper() *Reaper {
	return &Reaper{waiters: map[int]chan Exit{}, unclaimed: map[int]Exit{}}
}

// Run reaps children until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	ch := make(chan os.Signal, 32)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	tick := time.NewTicker(time.Second) // belt and braces: signals coalesce
	defer tick.Stop()
	for {
		r.reapAll()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		case <-tick.C:
		}
	}
}

func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		e := Exit{Pid: pid, At: time.Now()}
		switch {
		case ws.Exited():
			e.Status = ws.ExitStatus()
		case ws.Signaled():
			e.Signal = int(ws.Signal())
			e.Status = 128 + e.Signal
		default:
			continue
		}
		r.deliver(e)
	}
}

func (r *Reaper) deliver(e Exit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.waiters[e.Pid]; ok {
		delete(r.waiters, e.Pid)
		w <- e
		return
	}
	r.unclaimed[e.Pid] = e
	r.order = append(r.order, e.Pid)
	for len(r.order) > maxUnclaimed {
		delete(r.unclaimed, r.order[0])
		r.order = r.order[1:]
	}
}

// Watch returns a channel that receives the exit of pid once. Call it right
// after starting the process; an exit reaped before the call is kept.
func (r *Reaper) Watch(pid int) <-chan Exit {
	ch := make(chan Exit, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		// Forget its place in the eviction order too: a later exit of a
		// reused pid must not be evicted by this stale entry.
		for i, p := range r.order {
			if p == pid {
				r.order = append(r.order[:i], r.order[i+1:]...)
				break
			}
		}
		ch <- e
		return ch
	}
	r.waiters[pid] = ch
	return ch
}

// Start runs start (which forks a child and returns its pid) with exits
// held back, and watches the new pid. An exit already recorded for that
// pid can only be from an older process that had the same pid (the new
// one cannot have been reaped while the lock is held), so it is dropped:
// a recycled pid never inherits a stale exit.
func (r *Reaper) Start(start func() (int, error)) (int, <-chan Exit, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := start()
	if err != nil {
		return 0, nil, err
	}
	delete(r.unclaimed, pid)
	ch := make(chan Exit, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}
