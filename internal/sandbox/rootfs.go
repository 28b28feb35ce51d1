package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// Rootfs filesystem types for the read-only rootfs disk.
const (
	FSErofs = "erofs"
	FSExt4  = "ext4"
)

// CheckRootfsDir validates a host directory meant as a container rootfs.
func CheckRootfsDir(dir string) error {
	if dir == "" {
		return errors.New("no rootfs given: pass --rootfs DIR (a directory holding the container's filesystem)")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("rootfs %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("rootfs %s is not a directory", dir)
	}
	return nil
}

// BuildRootfsImage writes a read-only filesystem image of dir to out. The
// guest mounts it read-only below a tmpfs overlay, so it can never write
// to the host directory.
func BuildRootfsImage(ctx context.Context, dir, out, fstype string) error {
	if err := CheckRootfsDir(dir); err != nil {
		return err
	}
	var cmd *exec.Cmd
	switch fstype {
	case FSErofs, "":
		cmd = exec.CommandContext(ctx, "mkfs.erofs", "--quiet", "-T0", out, dir)
	case FSExt4:
		size, err := dirSize(dir)
		if err != nil {
			return err
		}
		// Room for metadata: 20% plus 16 MiB, in KiB.
		kib := (size+size/5)/1024 + 16*1024
		cmd = exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-d", dir, "-E", "root_owner=0:0",
			"-O", "^has_journal", "-m", "0", out, strconv.FormatInt(kib, 10)+"k")
	default:
		return fmt.Errorf("unknown rootfs filesystem %q: use erofs or ext4", fstype)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		_ = os.Remove(out)
		if errors.Is(err, exec.ErrNotFound) {
			return fmt.Errorf("build the rootfs image: %s is not installed (run scripts/setup.sh): %w", cmd.Path, err)
		}
		return fmt.Errorf("build %s rootfs image of %s: %w: %s", fstype, dir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += fi.Size()
		}
		total += 4096
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("measure rootfs %s: %w", dir, err)
	}
	return total, nil
}
