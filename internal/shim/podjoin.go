package shim

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// CRI annotations that place a container in a pod. containerd's CRI
// plugin sets them on every container of a pod sandbox.
const (
	AnnotationContainerType = "io.kubernetes.cri.container-type"
	AnnotationSandboxID     = "io.kubernetes.cri.sandbox-id"

	containerTypeSandbox   = "sandbox"
	containerTypeContainer = "container"
)

// hotplugSlots is the number of disks that containers joining a pod can
// add to its VM.
const hotplugSlots = 8

// podHotplugSlots is how many hot-plug slots a new pod's VM gets: a CRI
// pod sandbox gets hotplugSlots for the containers that will join it; any
// other container (a plain `ctr run`) is a pod of one and gets none, as
// empty PCIe root ports lengthen every boot.
func podHotplugSlots(annotations map[string]string) int {
	if annotations[AnnotationContainerType] == containerTypeSandbox {
		return hotplugSlots
	}
	return 0
}

// podRole tells what a container is in its pod from its annotations:
// joining is true for a container that joins the existing sandbox
// sandboxID; otherwise the container starts its own pod (sandboxID is
// its pod id, or "" without CRI annotations).
func podRole(annotations map[string]string) (sandboxID string, joining bool) {
	sandboxID = annotations[AnnotationSandboxID]
	return sandboxID, annotations[AnnotationContainerType] == containerTypeContainer && sandboxID != ""
}

// bundleAnnotations reads the annotations of the OCI spec in bundle.
func bundleAnnotations(bundle string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read the bundle's OCI spec: %w", err)
	}
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(bundle, "config.json"), err)
	}
	return spec.Annotations, nil
}

// diskSerial is the virtio-blk serial of a joining container's rootfs
// disk: unique per container id and within the 20-byte serial limit.
func diskSerial(id string) string {
	h := sha256.Sum256([]byte(id))
	return "c-" + hex.EncodeToString(h[:8])
}
