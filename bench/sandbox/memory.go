package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// procMem is what /proc/<pid>/smaps_rollup says about one process, in KiB.
type procMem struct {
	PssKiB int64 `json:"pss_kib"`
	RssKiB int64 `json:"rss_kib"`
}

// readRollup reads Pss and Rss of pid from /proc/<pid>/smaps_rollup.
func readRollup(pid int) (procMem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return procMem{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	var m procMem
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch key {
		case "Pss":
			m.PssKiB = kib(val)
		case "Rss":
			m.RssKiB = kib(val)
		}
	}
	if err := sc.Err(); err != nil {
		return procMem{}, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	return m, nil
}

// kib parses "   1234 kB".
func kib(v string) int64 {
	f := strings.Fields(v)
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	return n
}

// qemuMem splits a QEMU process's PSS (KiB) by what the mappings hold.
type qemuMem struct {
	// GuestRAM is the anonymous mapping of the guest's RAM: the memory the
	// guest has touched so far.
	GuestRAM int64 `json:"guest_ram_pss_kib"`
	// TCG is the translated-code buffer (anonymous, writable and
	// executable); it exists only under TCG emulation.
	TCG int64 `json:"tcg_code_pss_kib"`
	// File is file-backed mappings: binaries, libraries, the mmapped
	// initrd.
	File int64 `json:"file_pss_kib"`
	// Other is the rest: heap, device state, QEMU's copies of the kernel
	// and initrd for the firmware.
	Other int64 `json:"other_anon_pss_kib"`
}

// classifySmaps sums the Pss of each mapping in /proc/<pid>/smaps text by
// kind. ramKiB is the guest RAM size; its mapping may be a few MiB larger
// (alignment).
func classifySmaps(smaps string, ramKiB int64) qemuMem {
	var m qemuMem
	var cur *int64
	sc := bufio.NewScanner(strings.NewReader(smaps))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if start, end, perms, path, ok := mappingHeader(line); ok {
			size := int64(end-start) / 1024
			switch {
			case strings.HasPrefix(path, "/"):
				cur = &m.File
			case path == "" && size >= ramKiB && size <= ramKiB+4*1024 && strings.HasPrefix(perms, "rw-"):
				cur = &m.GuestRAM
			case path == "" && strings.HasPrefix(perms, "rwx"):
				cur = &m.TCG
			default:
				cur = &m.Other
			}
			continue
		}
		if cur != nil && strings.HasPrefix(line, "Pss:") {
			*cur += kib(strings.TrimPrefix(line, "Pss:"))
		}
	}
	return m
}

// mappingHeader parses "start-end perms offset dev inode [path]".
func mappingHeader(line string) (start, end uint64, perms, path string, ok bool) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return 0, 0, "", "", false
	}
	a, b, found := strings.Cut(f[0], "-")
	if !found {
		return 0, 0, "", "", false
	}
	var err error
	if start, err = strconv.ParseUint(a, 16, 64); err != nil {
		return 0, 0, "", "", false
	}
	if end, err = strconv.ParseUint(b, 16, 64); err != nil {
		return 0, 0, "", "", false
	}
	if len(f) >= 6 {
		path = strings.Join(f[5:], " ")
	}
	return start, end, f[1], path, true
}

// readQEMUMem reads the PSS of a QEMU process and splits it by kind.
func readQEMUMem(pid int, ramMiB int) (procMem, qemuMem, error) {
	pm, err := readRollup(pid)
	if err != nil {
		return pm, qemuMem{}, err
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return pm, qemuMem{}, fmt.Errorf("read memory map of pid %d: %w", pid, err)
	}
	return pm, classifySmaps(string(smaps), int64(ramMiB)*1024), nil
}
