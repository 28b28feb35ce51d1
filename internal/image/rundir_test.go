package image

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// A live run's directory survives a sweep; once its lock is free (the run
// died without cleaning up) the next sweep removes it and its lock file.
func TestRunDirSweep(t *testing.T) {
	c, err := OpenCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	live, releaseLive, err := c.RunDir()
	if err != nil {
		t.Fatal(err)
	}
	dead, _, err := c.RunDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{live, dead} {
		if err := os.WriteFile(filepath.Join(d, "secret"), []byte("plaintext"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A sweep in this process cannot take the locks this process holds
	// through other open files: both runs look alive.
	if n, err := c.SweepRunDirs(); err != nil || n != 0 {
		t.Fatalf("sweep with both runs alive: %d, %v", n, err)
	}
	// "Kill" the dead run: release its lock without removing anything,
	// as the kernel does when a process dies.
	if err := unlockByPath(dead + ".lock"); err != nil {
		t.Fatal(err)
	}
	if n, err := c.SweepRunDirs(); err != nil || n != 1 {
		t.Fatalf("sweep after a run died: %d, %v", n, err)
	}
	for _, p := range []string{dead, dead + ".lock"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after the sweep: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(live, "secret")); err != nil {
		t.Errorf("the live run's directory was touched: %v", err)
	}
	if err := releaseLive(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(c.dir, UnpackedDir))
	if len(ents) != 0 {
		t.Errorf("left after release: %v", ents)
	}
	// A lock-less leftover of an older version goes once it is an hour old.
	old := filepath.Join(c.dir, UnpackedDir, ".run-legacy")
	if err := os.Mkdir(old, 0o700); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.SweepRunDirs(); n != 0 {
		t.Fatal("a fresh lock-less directory was removed")
	}
	past := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.SweepRunDirs(); n != 1 {
		t.Fatal("an hour-old lock-less directory was kept")
	}
}

// unlockByPath drops the lock a dead process would have held: it is held
// through the RunDir's open file, found by its path in /proc/self/fd.
func unlockByPath(path string) error {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil || target != path {
			continue
		}
		var n int
		for _, ch := range fd.Name() {
			n = n*10 + int(ch-'0')
		}
		return syscall.Flock(n, syscall.LOCK_UN)
	}
	return os.ErrNotExist
}
