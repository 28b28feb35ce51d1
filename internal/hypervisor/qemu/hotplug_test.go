package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-project/coffer/internal/hypervisor"
)

// blockNodes returns node-name → file name of QEMU's named block nodes.
func blockNodes(t *testing.T, v *VM) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ret, err := v.QMP(ctx, "query-named-block-nodes", nil)
	if err != nil {
		t.Fatalf("query-named-block-nodes: %v", err)
	}
	var nodes []struct {
		NodeName string `json:"node-name"`
		File     string `json:"file"`
		RO       bool   `json:"ro"`
	}
	if err := json.Unmarshal(ret, &nodes); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, n := range nodes {
		m[n.NodeName] = n.File
	}
	return m
}

// blockDevices returns query-block's qdev paths → inserted node names.
func blockDevices(t *testing.T, v *VM) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ret, err := v.QMP(ctx, "query-block", nil)
	if err != nil {
		t.Fatalf("query-block: %v", err)
	}
	var blocks []struct {
		QDev     string `json:"qdev"`
		Inserted *struct {
			NodeName string `json:"node-name"`
			RO       bool   `json:"ro"`
		} `json:"inserted"`
	}
	if err := json.Unmarshal(ret, &blocks); err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, b := range blocks {
		if b.Inserted != nil {
			m[b.QDev] = b.Inserted.NodeName
		}
	}
	return m
}

// pciDevicesBehind returns the qdev ids of the devices behind the PCI
// bridge (root port) with qdev id bridge.
func pciDevicesBehind(t *testing.T, v *VM, bridge string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ret, err := v.QMP(ctx, "query-pci", nil)
	if err != nil {
		t.Fatalf("query-pci: %v", err)
	}
	type dev struct {
		QDevID string `json:"qdev_id"`
		Bridge *struct {
			Devices []json.RawMessage `json:"devices"`
		} `json:"pci_bridge"`
	}
	var buses []struct {
		Devices []json.RawMessage `json:"devices"`
	}
	if err := json.Unmarshal(ret, &buses); err != nil {
		t.Fatal(err)
	}
	var walk func([]json.RawMessage) []string
	walk = func(raw []json.RawMessage) []string {
		for _, r := range raw {
			var d dev
			if err := json.Unmarshal(r, &d); err != nil {
				t.Fatal(err)
			}
			if d.Bridge == nil {
				continue
			}
			if d.QDevID == bridge {
				var ids []string
				for _, c := range d.Bridge.Devices {
					var cd dev
					json.Unmarshal(c, &cd)
					ids = append(ids, cd.QDevID)
				}
				return ids
			}
			if ids := walk(d.Bridge.Devices); ids != nil {
				return ids
			}
		}
		return nil
	}
	for _, b := range buses {
		if ids := walk(b.Devices); ids != nil {
			return ids
		}
	}
	return nil
}

func writeImage(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHotplugDisk boots a guest with two hot-plug slots, plugs disks in
// and out and checks both QEMU's view and the guest's (the test init loads
// virtio_pci/virtio_blk and prints "SAW <serial>" / "GONE <serial>" as disks
// come and go under /sys/block).
func TestHotplugDisk(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	cfg := guestConfig(dir, "hotplug")
	cfg.HotplugSlots = 2
	v := startVM(t, cfg)
	guestSees := noModules == ""
	if !guestSees {
		t.Logf("guest-side checks skipped, QEMU-side only: %s", noModules)
	}
	boot := waitConsole(t, v, "HOTPLUG-READY", 60*time.Second)
	t.Logf("guest ready after %s", boot.Round(time.Millisecond))
	if guestSees && strings.Contains(v.ConsoleTail(50), "INSMOD-FAILED") {
		t.Fatalf("guest could not load the virtio modules:\n%s", v.ConsoleTail(20))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	hot1 := writeImage(t, dir, "hot1.img")
	start := time.Now()
	if err := v.HotplugDisk(ctx, hypervisor.Disk{Serial: "hot1", Path: hot1, ReadOnly: true}); err != nil {
		t.Fatalf("HotplugDisk(hot1): %v", err)
	}
	t.Logf("HotplugDisk(hot1) took %s", time.Since(start).Round(time.Millisecond))
	node, dev := hotplugNames("hot1")
	if got := blockNodes(t, v)[node]; got != hot1 {
		t.Errorf("block node %s has file %q, want %q", node, got, hot1)
	}
	if got := blockDevices(t, v)["/machine/peripheral/"+dev+"/virtio-backend"]; got != node {
		t.Errorf("query-block: device %s has node %q, want %q (%v)", dev, got, node, blockDevices(t, v))
	}
	if got := pciDevicesBehind(t, v, "hp0"); len(got) != 1 || got[0] != dev {
		t.Errorf("devices behind root port hp0 = %v, want [%s]", got, dev)
	}
	ret, err := v.QMP(ctx, "qom-get", map[string]string{"path": "/machine/peripheral/" + dev, "property": "serial"})
	if err != nil || strings.Trim(string(ret), `"`) != "hot1" {
		t.Errorf("qom-get serial of %s = %s, %v", dev, ret, err)
	}
	if guestSees {
		took := waitConsole(t, v, "SAW hot1", 30*time.Second)
		t.Logf("guest saw hot1 %s after HotplugDisk returned", took.Round(time.Millisecond))
	}

	// A second disk takes the second slot; a third finds none; a serial
	// cannot be plugged twice.
	hot2 := writeImage(t, dir, "hot2.img")
	if err := v.HotplugDisk(ctx, hypervisor.Disk{Serial: "hot2", Path: hot2}); err != nil {
		t.Fatalf("HotplugDisk(hot2): %v", err)
	}
	if got := pciDevicesBehind(t, v, "hp1"); len(got) != 1 {
		t.Errorf("devices behind hp1 = %v, want hot2's", got)
	}
	hot3 := writeImage(t, dir, "hot3.img")
	err = v.HotplugDisk(ctx, hypervisor.Disk{Serial: "hot3", Path: hot3})
	if err == nil || !strings.Contains(err.Error(), "all 2 hot-plug slots are in use") || !strings.Contains(err.Error(), `"hot3"`) {
		t.Fatalf("HotplugDisk with no free slot: %v", err)
	}
	t.Logf("no free slot: %v", err)
	if _, ok := blockNodes(t, v)["hpn-s-hot3"]; ok {
		t.Error("a failed hot-plug left a block node")
	}
	if err := v.HotplugDisk(ctx, hypervisor.Disk{Serial: "hot1", Path: hot3}); err == nil || !strings.Contains(err.Error(), "already hot-plugged") {
		t.Errorf("HotplugDisk of a plugged serial: %v", err)
	}
	if guestSees {
		waitConsole(t, v, "SAW hot2", 30*time.Second)
	}

	// Unplug hot1: the guest releases it, QEMU forgets the node.
	start = time.Now()
	if err := v.UnplugDisk(ctx, "hot1"); err != nil {
		t.Fatalf("UnplugDisk(hot1): %v\nconsole:\n%s", err, v.ConsoleTail(20))
	}
	t.Logf("UnplugDisk(hot1) took %s", time.Since(start).Round(time.Millisecond))
	if _, ok := blockNodes(t, v)[node]; ok {
		t.Errorf("block node %s still exists after UnplugDisk", node)
	}
	for qdev := range blockDevices(t, v) {
		if strings.Contains(qdev, dev) {
			t.Errorf("query-block still lists %s", qdev)
		}
	}
	if got := pciDevicesBehind(t, v, "hp0"); len(got) != 0 {
		t.Errorf("devices behind hp0 after unplug = %v", got)
	}
	if guestSees {
		waitConsole(t, v, "GONE hot1", 30*time.Second)
	}
	if err := v.UnplugDisk(ctx, "hot1"); err == nil || !strings.Contains(err.Error(), "no hot-plugged disk") {
		t.Errorf("second UnplugDisk(hot1): %v", err)
	}

	// A missing file fails with its path, leaves no node and frees the
	// slot again.
	missing := filepath.Join(dir, "no-such.img")
	err = v.HotplugDisk(ctx, hypervisor.Disk{Serial: "miss", Path: missing})
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), `"miss"`) {
		t.Fatalf("HotplugDisk of a missing file: %v, want an error naming %s", err, missing)
	}
	var qe *QMPError
	if !errors.As(err, &qe) {
		t.Errorf("error %v does not carry QEMU's *QMPError", err)
	}
	t.Logf("missing file: %v", err)
	for n := range blockNodes(t, v) {
		if strings.Contains(n, "miss") {
			t.Errorf("failed hot-plug left block node %s", n)
		}
	}
	// The freed slot takes hot3.
	if err := v.HotplugDisk(ctx, hypervisor.Disk{Serial: "hot3", Path: hot3}); err != nil {
		t.Fatalf("HotplugDisk(hot3) into the freed slot: %v", err)
	}
	if got := pciDevicesBehind(t, v, "hp0"); len(got) != 1 {
		t.Errorf("devices behind hp0 = %v, want hot3's", got)
	}
	if guestSees {
		waitConsole(t, v, "SAW hot3", 30*time.Second)
	}
	if err := v.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, v)
}

// TestHotplugErrors covers a VM without slots, an invalid disk and an
// unplug the guest never completes (its CPUs never start: -S).
func TestHotplugErrors(t *testing.T) {
	t.Parallel()
	dir := vmTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	micro := guestConfig(dir, "sleep")
	micro.MachineType = "microvm"
	micro.HotplugSlots = 2
	if _, err := Start(ctx, micro, testLogger(t)); err == nil || !strings.Contains(err.Error(), "needs MachineType q35") {
		t.Errorf("Start of microvm with HotplugSlots: %v", err)
	}

	cfg := guestConfig(dir, "sleep")
	cfg.ExtraArgs = []string{"-S"}
	none := startVM(t, cfg)
	img := writeImage(t, dir, "d.img")
	if err := none.HotplugDisk(ctx, hypervisor.Disk{Serial: "d", Path: img}); err == nil || !strings.Contains(err.Error(), "no hot-plug slots") {
		t.Errorf("HotplugDisk without slots: %v", err)
	}

	cfg.StateDir = filepath.Join(dir, "vm2")
	cfg.HotplugSlots = 1
	cfg.Disks = []hypervisor.Disk{{Serial: "boot", Path: img, ReadOnly: true}}
	v := startVM(t, cfg)
	for _, tc := range []struct {
		d    hypervisor.Disk
		want string
	}{
		{hypervisor.Disk{Path: img}, "Serial is empty"},
		{hypervisor.Disk{Serial: strings.Repeat("s", 21), Path: img}, "at most 20 bytes"},
		{hypervisor.Disk{Serial: "boot", Path: img}, "already used by boot disk"},
		{hypervisor.Disk{Serial: "c", Path: img, Cache: "bogus"}, "unknown cache mode"},
		{hypervisor.Disk{Serial: "f", Path: img, Format: "bogus"}, "bogus"},
	} {
		if err := v.HotplugDisk(ctx, tc.d); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("HotplugDisk(%+v) = %v, want mention of %q", tc.d, err, tc.want)
		}
	}
	if err := v.UnplugDisk(ctx, "boot"); err == nil || !strings.Contains(err.Error(), "boot disks cannot be unplugged") {
		t.Errorf("UnplugDisk(boot): %v", err)
	}
	// An odd serial gets a hashed node name and still works.
	if err := v.HotplugDisk(ctx, hypervisor.Disk{Serial: "odd serial/1", Path: img, ReadOnly: true, Cache: "none"}); err != nil {
		if !strings.Contains(err.Error(), "O_DIRECT") && !strings.Contains(err.Error(), "Invalid argument") {
			t.Fatalf("HotplugDisk(odd serial): %v", err)
		}
		// tmpfs has no O_DIRECT; use the default cache.
		if err := v.HotplugDisk(ctx, hypervisor.Disk{Serial: "odd serial/1", Path: img, ReadOnly: true}); err != nil {
			t.Fatalf("HotplugDisk(odd serial): %v", err)
		}
	}
	// The guest never runs, so it never releases the device: UnplugDisk
	// gives up at ctx's deadline, says so, and leaves the disk attached.
	short, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err := v.UnplugDisk(short, "odd serial/1")
	scancel()
	if err == nil || !strings.Contains(err.Error(), "did not release") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("UnplugDisk with an unresponsive guest: %v", err)
	}
	t.Logf("unresponsive guest: %v", err)
	node, _ := hotplugNames("odd serial/1")
	if _, ok := blockNodes(t, v)[node]; !ok {
		t.Errorf("block node %s vanished although the device is still attached", node)
	}
	// Retrying keeps waiting (the pending device_del is not an error).
	short, scancel = context.WithTimeout(ctx, 300*time.Millisecond)
	err = v.UnplugDisk(short, "odd serial/1")
	scancel()
	if err == nil || !strings.Contains(err.Error(), "did not release") {
		t.Errorf("second UnplugDisk with an unresponsive guest: %v", err)
	}
}
