package shim

import (
	"context"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
)

// clockProbes is how many Check round trips estimate the guest clock's
// offset; the fastest one wins.
const clockProbes = 3

type checker interface {
	Check(context.Context, *api.CheckRequest) (*api.CheckResponse, error)
}

// guestClockOffset estimates how far the guest's wall clock is ahead of
// the host's. Exit times come from the guest's clock, which Linux sets at
// boot from the emulated RTC to the whole second (up to 1 s behind) and
// which may drift under TCG; subtracting the offset puts them on the
// host's clock within half the fastest round trip. ok is false when the
// agent does not report its clock (an older agent): then exit times stay
// the guest's readings.
func guestClockOffset(ctx context.Context, agent checker) (offset time.Duration, ok bool) {
	best := time.Duration(-1)
	for range clockProbes {
		t0 := time.Now()
		r, err := agent.Check(ctx, &api.CheckRequest{})
		rtt := time.Since(t0)
		if err != nil || r.GetTimeUnixNano() == 0 {
			return 0, false
		}
		if best < 0 || rtt < best {
			best = rtt
			offset = time.Unix(0, r.GetTimeUnixNano()).Sub(t0.Add(rtt / 2))
		}
	}
	return offset, true
}
