// Command coffer-agent is the guest agent: PID 1 of every Coffer pod VM.
// Started with the first argument "coffer-init" it is instead the init /
// exec stage of a container (see package runner).
package main

import (
	"runtime"

	"github.com/coffer-project/coffer/internal/agent"
	"github.com/coffer-project/coffer/internal/runner"
	_ "github.com/coffer-project/coffer/internal/runner/nsenter"
)

// The main goroutine keeps the main thread. The runner joins containers'
// namespaces on goroutines locked to their threads, which the runtime
// discards when they end; a locked goroutine that ended on the main
// thread would instead park it, holding those namespaces for ever.
func init() { runtime.LockOSThread() }

func main() {
	if runner.IsInit() {
		runner.RunInit()
	}
	agent.Fatal(agent.Main())
}
