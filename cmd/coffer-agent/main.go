// Command coffer-agent is the guest agent: PID 1 of every Coffer pod VM.
// Started with the first argument "coffer-init" it is instead the init /
// exec stage of a container (see package runner).
package main

import (
	"github.com/coffer-project/coffer/internal/agent"
	"github.com/coffer-project/coffer/internal/runner"
	_ "github.com/coffer-project/coffer/internal/runner/nsenter"
)

func main() {
	if runner.IsInit() {
		runner.RunInit()
	}
	agent.Fatal(agent.Main())
}
