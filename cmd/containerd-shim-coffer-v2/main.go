// Command containerd-shim-coffer-v2 is Coffer's containerd shim (runtime
// io.containerd.coffer.v2): containerd starts it to run a pod's
// containers in a Coffer VM. See internal/shim.
package main

import (
	"context"

	"github.com/coffer-project/coffer/internal/shim"
)

func main() {
	shim.Run(context.Background())
}
