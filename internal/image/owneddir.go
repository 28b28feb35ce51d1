package image

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ownedDir makes a new directory in parent named prefix plus a random
// suffix, with a lock file next to it (the same name plus ".lock") that
// stays locked while the calling process lives: sweepOwnedDirs tells a
// live owner's directory from the leftovers of one that was killed by it.
// The lock is taken before the directory exists, so no sweep can see the
// directory unowned. release removes the directory (if still there) and
// the lock file.
func ownedDir(parent, prefix string, perm os.FileMode) (dir string, release func() error, err error) {
	lf, err := os.CreateTemp(parent, prefix+"*.lock")
	if err != nil {
		return "", nil, err
	}
	fail := func(err error) (string, func() error, error) {
		lf.Close()
		os.Remove(lf.Name())
		return "", nil, err
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fail(fmt.Errorf("lock %s: %w", lf.Name(), err))
	}
	dir = strings.TrimSuffix(lf.Name(), ".lock")
	if err := os.Mkdir(dir, perm); err != nil {
		return fail(err)
	}
	if err := os.Chmod(dir, perm); err != nil { // whatever the umask
		os.Remove(dir)
		return fail(err)
	}
	release = func() error {
		err := os.RemoveAll(dir)
		if err == nil {
			err = os.Remove(lf.Name())
		}
		lf.Close()
		return err
	}
	return dir, release, nil
}

// sweepOwnedDirs removes the directories ownedDir made in parent with
// prefix whose lock files no process holds (their owners died), and those
// lock files. Directories without a lock file are left alone. It returns
// how many it removed.
func sweepOwnedDirs(parent, prefix string) (int, error) {
	ents, err := os.ReadDir(parent)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for _, e := range ents {
		base, isLock := strings.CutSuffix(e.Name(), ".lock")
		if !isLock || !strings.HasPrefix(base, prefix) {
			continue
		}
		lf, err := os.OpenFile(filepath.Join(parent, e.Name()), os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			if err := os.RemoveAll(filepath.Join(parent, base)); err != nil {
				lf.Close()
				return n, fmt.Errorf("remove %s, left by a process that died: %w", filepath.Join(parent, base), err)
			}
			_ = os.Remove(filepath.Join(parent, e.Name()))
			n++
		}
		lf.Close()
	}
	return n, nil
}
