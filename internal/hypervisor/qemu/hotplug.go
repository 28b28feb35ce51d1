package qemu

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/coffer-project/coffer/internal/hypervisor"
)

// DefaultUnplugTimeout bounds UnplugDisk's wait for the guest to release a
// device when ctx has no earlier deadline.
const DefaultUnplugTimeout = 10 * time.Second

// hotDisk is a disk hot-plugged into slot hot[i].
type hotDisk struct {
	disk hypervisor.Disk
	node string // block node name
	dev  string // device id
	// busy is set while HotplugDisk or UnplugDisk works on the slot.
	busy bool
	// attached is set once device_add succeeded.
	attached bool
	// deleted is closed when QEMU reports DEVICE_DELETED for dev.
	deleted chan struct{}
}

// hotplugNames derives the block node name and device id for a serial.
// Serials made of QEMU id characters are used as they are; any other serial
// is hashed. The "s-"/"h-" infix keeps the two kinds from colliding, and
// both stay within QEMU's 31-character node-name limit.
func hotplugNames(serial string) (node, dev string) {
	key := "s-" + serial
	if !plainID(serial) {
		h := sha256.Sum256([]byte(serial))
		key = "h-" + hex.EncodeToString(h[:8])
	}
	return "hpn-" + key, "hpd-" + key
}

// plainID reports whether s has only characters QEMU accepts in ids.
func plainID(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// deviceDeleted handles a DEVICE_DELETED event (called by the QMP reader).
func (v *VM) deviceDeleted(data json.RawMessage) {
	var d struct {
		Device string `json:"device"`
	}
	if json.Unmarshal(data, &d) != nil || d.Device == "" {
		return
	}
	v.hpMu.Lock()
	defer v.hpMu.Unlock()
	for _, h := range v.hot {
		if h != nil && h.dev == d.Device {
			select {
			case <-h.deleted:
			default:
				close(h.deleted)
			}
		}
	}
}

// HotplugDisk attaches d to the running VM as a virtio-blk-pci device on a
// free hot-plug slot (Config.HotplugSlots): QMP blockdev-add of a d.Format
// (raw by default) node over the file, then device_add with d.Serial. The
// guest sees it as /dev/disk/by-id/virtio-<Serial> once its PCI hot-plug
// driver has handled the slot. On failure nothing is left attached.
func (v *VM) HotplugDisk(ctx context.Context, d hypervisor.Disk) error {
	if d.Format == "" {
		d.Format = hypervisor.DefaultDiskFormat
	}
	if d.Cache == "" {
		d.Cache = hypervisor.DefaultDiskCache
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("vm %s: hot-plug disk %q: "+format, append([]any{v.cfg.ID, d.Serial}, a...)...)
	}
	switch {
	case d.Serial == "":
		return fmt.Errorf("vm %s: hot-plug disk %s: Serial is empty: the guest finds disks by serial", v.cfg.ID, d.Path)
	case len(d.Serial) > 20:
		return fail("serial is %d bytes: virtio-blk serials are at most 20 bytes", len(d.Serial))
	case d.Path == "":
		return fail("Path is empty")
	}
	direct, noFlush, writeCache := false, false, true
	switch d.Cache {
	case "writeback":
	case "none":
		direct = true
	case "unsafe":
		noFlush = true
	case "directsync":
		direct, writeCache = true, false
	case "writethrough":
		writeCache = false
	default:
		return fail("unknown cache mode %q: use writeback, none, unsafe, directsync or writethrough", d.Cache)
	}
	if v.cfg.HotplugSlots == 0 {
		return fail("the VM has no hot-plug slots: start it with Config.HotplugSlots > 0 (q35 only)")
	}
	for _, b := range v.cfg.Disks {
		if b.Serial == d.Serial {
			return fail("serial already used by boot disk %s: serials must be unique", b.Path)
		}
	}
	fileDriver := "file"
	if st, err := os.Stat(d.Path); err == nil && st.Mode()&os.ModeDevice != 0 {
		fileDriver = "host_device"
	}

	// Reserve a slot.
	node, dev := hotplugNames(d.Serial)
	h := &hotDisk{disk: d, node: node, dev: dev, busy: true, deleted: make(chan struct{})}
	slot := -1
	v.hpMu.Lock()
	for i, o := range v.hot {
		if o != nil && o.disk.Serial == d.Serial {
			v.hpMu.Unlock()
			return fail("a disk with this serial is already hot-plugged (%s in slot %s): unplug it first", o.disk.Path, hotplugBus(i))
		}
		if o == nil && slot < 0 {
			slot = i
		}
	}
	if slot < 0 {
		v.hpMu.Unlock()
		return fail("all %d hot-plug slots are in use: unplug a disk or start the VM with more HotplugSlots", v.cfg.HotplugSlots)
	}
	v.hot[slot] = h
	v.hpMu.Unlock()
	release := func() {
		v.hpMu.Lock()
		v.hot[slot] = nil
		v.hpMu.Unlock()
	}

	start := time.Now()
	_, err := v.qmpExec(ctx, "blockdev-add", map[string]any{
		"driver":    d.Format,
		"node-name": node,
		"read-only": d.ReadOnly,
		"cache":     map[string]bool{"direct": direct, "no-flush": noFlush},
		"file": map[string]any{
			"driver":    fileDriver,
			"filename":  d.Path,
			"read-only": d.ReadOnly,
			"cache":     map[string]bool{"direct": direct, "no-flush": noFlush},
		},
	})
	if err != nil {
		release()
		return fail("open %s: %w", d.Path, err)
	}
	_, err = v.qmpExec(ctx, "device_add", map[string]any{
		"driver":      "virtio-blk-pci",
		"id":          dev,
		"drive":       node,
		"serial":      d.Serial,
		"bus":         hotplugBus(slot),
		"write-cache": onOff(writeCache),
	})
	if err != nil {
		// Roll back with a fresh deadline: ctx may be what failed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, derr := v.qmpExec(rctx, "blockdev-del", map[string]string{"node-name": node})
		cancel()
		if derr != nil {
			// The node stays; keep the slot so a retry does not collide
			// with it, and say so.
			v.hpMu.Lock()
			h.busy = false
			v.hpMu.Unlock()
			return errors.Join(fail("device_add on %s: %w", hotplugBus(slot), err),
				fail("roll back: block node %s left in QEMU: %w (UnplugDisk(%q) retries the removal)", node, derr, d.Serial))
		}
		release()
		return fail("device_add on %s: %w", hotplugBus(slot), err)
	}
	v.hpMu.Lock()
	h.busy, h.attached = false, true
	v.hpMu.Unlock()
	v.log.Info("disk hot-plugged", "serial", d.Serial, "path", d.Path, "read_only", d.ReadOnly, "slot", hotplugBus(slot), "device", dev, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// UnplugDisk removes the hot-plugged disk with this serial: QMP device_del,
// then a wait for QEMU's DEVICE_DELETED event, then blockdev-del. The
// device goes only once the guest releases it (its PCI hot-plug driver
// ejects the slot), so the wait is bounded by ctx or DefaultUnplugTimeout,
// whichever ends first; on timeout the disk stays attached and a later
// UnplugDisk call continues where this one stopped.
func (v *VM) UnplugDisk(ctx context.Context, serial string) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("vm %s: unplug disk %q: "+format, append([]any{v.cfg.ID, serial}, a...)...)
	}
	v.hpMu.Lock()
	slot := -1
	for i, h := range v.hot {
		if h != nil && h.disk.Serial == serial {
			slot = i
		}
	}
	if slot < 0 {
		v.hpMu.Unlock()
		return fail("no hot-plugged disk has this serial (boot disks cannot be unplugged)")
	}
	h := v.hot[slot]
	if h.busy {
		v.hpMu.Unlock()
		return fail("another hot-plug or unplug of this disk is in progress")
	}
	h.busy = true
	attached := h.attached
	v.hpMu.Unlock()
	done := func() {
		v.hpMu.Lock()
		h.busy = false
		v.hpMu.Unlock()
	}

	start := time.Now()
	if attached {
		wctx, cancel := context.WithTimeout(ctx, DefaultUnplugTimeout)
		defer cancel()
		select {
		case <-h.deleted:
		default:
			_, err := v.qmpExec(wctx, "device_del", map[string]string{"id": h.dev})
			var qe *QMPError
			switch {
			case err == nil:
			case errors.As(err, &qe) && qe.Class == "DeviceNotFound":
				// Already gone (the event raced with us).
				close(h.deleted)
			case errors.As(err, &qe) && strings.Contains(qe.Desc, "already in the process of unplug"):
				// A previous UnplugDisk timed out; keep waiting.
			default:
				done()
				return fail("device_del %s: %w", h.dev, err)
			}
		}
		select {
		case <-h.deleted:
		case <-wctx.Done():
			done()
			return fail("the guest did not release device %s on %s within %s (no DEVICE_DELETED event): %w; its PCI hot-plug driver may not be running yet or the device is in use; the disk stays attached, call UnplugDisk again to keep waiting",
				h.dev, hotplugBus(slot), time.Since(start).Round(time.Millisecond), context.Cause(wctx))
		}
		v.hpMu.Lock()
		h.attached = false
		v.hpMu.Unlock()
	}
	if _, err := v.qmpExec(ctx, "blockdev-del", map[string]string{"node-name": h.node}); err != nil {
		done()
		return fail("device removed, but blockdev-del %s failed: %w (call UnplugDisk again to retry)", h.node, err)
	}
	v.hpMu.Lock()
	v.hot[slot] = nil
	v.hpMu.Unlock()
	v.log.Info("disk unplugged", "serial", serial, "slot", hotplugBus(slot), "took", time.Since(start).Round(time.Millisecond))
	return nil
}
