package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	api "github.com/coffer-project/coffer/api/agent"
	"github.com/coffer-project/coffer/internal/sandbox"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// runDetached hands the pod to a background owner process and returns
// once the container runs.
func runDetached(ctx context.Context, dir string, req *sandbox.PodRequest) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	st := &sandbox.State{Name: req.Name, ID: req.Name, Status: sandbox.StatusStarting, Created: time.Now().UTC(),
		Command: req.Spec.Process.Args, Rootfs: req.Rootfs, Detached: true, Request: b}
	if err := sandbox.WriteState(dir, st); err != nil {
		_ = os.RemoveAll(dir)
		return &exitError{code: exitCofferError, err: err}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "owner.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		_ = os.RemoveAll(dir)
		return &exitError{code: exitCofferError, err: err}
	}
	defer logf.Close()
	args := []string{"__pod-owner", dir}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return &exitError{code: exitCofferError, err: fmt.Errorf("start the pod owner: %w", err)}
	}
	owner := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(req.BootTimeout + 30*time.Second)
	// outcome reports what the owner recorded: the pod runs (or, once
	// the owner is gone, already ran), or why it failed to start. The
	// owner may record a failure and exit before we look.
	outcome := func(ownerGone bool) (finished bool, err error) {
		st, rerr := sandbox.ReadState(dir)
		switch {
		case rerr != nil:
			return false, nil
		case st.Status == sandbox.StatusRunning, ownerGone && st.Status == sandbox.StatusExited:
			fmt.Println(req.Name)
			return true, nil
		case st.Error != "":
			_ = sandbox.RemovePodDir(dir)
			return true, startError(errors.New(st.Error))
		}
		return false, nil
	}
	for {
		if finished, err := outcome(false); finished {
			return err
		}
		select {
		case <-done:
			if finished, err := outcome(true); finished {
				return err
			}
			logb, _ := os.ReadFile(filepath.Join(dir, "owner.log"))
			_ = sandbox.RemovePodDir(dir)
			return &exitError{code: exitCofferError, err: fmt.Errorf("the pod owner exited during start: %s", strings.TrimSpace(string(logb)))}
		case <-deadline:
			_ = unix.Kill(owner, unix.SIGKILL)
			_ = sandbox.RemovePodDir(dir)
			return &exitError{code: exitCofferError, err: errors.New("the pod did not start in time")}
		case <-ctx.Done():
			_ = unix.Kill(owner, unix.SIGKILL)
			_ = sandbox.RemovePodDir(dir)
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// newPodOwnerCmd is the hidden background process that owns a detached
// pod's VM for its whole life.
func newPodOwnerCmd(g *globalOpts) *cobra.Command {
	return &cobra.Command{
		Use:    "__pod-owner DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return podOwner(cmd.Context(), g, args[0])
		},
	}
}

func podOwner(ctx context.Context, g *globalOpts, dir string) error {
	log := g.logger()
	signal.Ignore(unix.SIGHUP, unix.SIGPIPE)
	st, err := sandbox.ReadState(dir)
	if err != nil {
		return err
	}
	var req sandbox.PodRequest
	if err := json.Unmarshal(st.Request, &req); err != nil {
		return fmt.Errorf("bad pod request: %w", err)
	}
	fail := func(err error) error {
		st.Error = err.Error()
		_ = sandbox.WriteState(dir, st)
		return err
	}
	// SIGTERM to the owner (coffer rm -f) stops the pod: while it starts,
	// by cancelling the start (which cleans up); once the container runs,
	// by killing it, which ends the pod. Installed first, so that no
	// signal finds the default action (death without a recorded exit).
	var running atomic.Pointer[api.AgentService]
	kill := func(agent api.AgentService) {
		_, _ = agent.SignalProcess(ctx, &api.SignalProcessRequest{ContainerId: sandbox.ContainerID, Signal: uint32(unix.SIGKILL), All: true})
	}
	startCtx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT)
	go func() {
		for range sigs {
			if agent := running.Load(); agent != nil {
				kill(*agent)
			} else {
				cancelStart()
			}
		}
	}()
	pod, err := sandbox.StartPod(startCtx, dir, &req, true, log)
	if err != nil {
		if _, statErr := os.Stat(dir); statErr == nil || errors.Is(err, context.Canceled) {
			return fail(err)
		}
		// StartPod removed the directory: recreate just enough to report.
		if mkErr := os.MkdirAll(dir, 0o700); mkErr == nil {
			return fail(err)
		}
		return err
	}
	outf, err := os.OpenFile(filepath.Join(dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		pod.Close(nil, false)
		return fail(err)
	}
	defer outf.Close()
	errf, err := os.OpenFile(filepath.Join(dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		pod.Close(nil, false)
		return fail(err)
	}
	defer errf.Close()
	agent := pod.Sandbox.Agent
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = sandbox.CopyOutput(ctx, agent, sandbox.ContainerID, "", false, outf) }()
	go func() { defer wg.Done(); _ = sandbox.CopyOutput(ctx, agent, sandbox.ContainerID, "", true, errf) }()
	if err := pod.Start(startCtx); err != nil {
		pod.Close(nil, false)
		if mkErr := os.MkdirAll(dir, 0o700); mkErr == nil {
			return fail(err)
		}
		return err
	}
	running.Store(&agent)
	if startCtx.Err() != nil { // a signal came between Start and Store
		kill(agent)
	}
	_, _ = agent.CloseStdin(ctx, &api.CloseStdinRequest{ContainerId: sandbox.ContainerID})
	res, err := pod.Wait(ctx)
	code := -1
	if err == nil {
		code = int(res.ExitStatus)
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	} else {
		// Recorded with the exit, for `coffer ps` and `coffer logs`.
		pod.State.Error = "the pod ended abnormally: " + err.Error()
		log.Error("pod ended abnormally", "err", err)
	}
	pod.Close(&code, true)
	return nil
}

func newLogsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the output of a detached pod",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := sandbox.CheckName(args[0]); err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			dir := sandbox.PodDir(sandbox.RuntimeDir(), args[0])
			st, err := sandbox.ReadState(dir)
			if err != nil {
				return &exitError{code: exitCofferError, err: fmt.Errorf("no pod named %q (see `coffer ps`)", args[0])}
			}
			for _, f := range []struct {
				name string
				w    *os.File
			}{{"stdout.log", os.Stdout}, {"stderr.log", os.Stderr}} {
				b, err := os.ReadFile(filepath.Join(dir, f.name))
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				_, _ = f.w.Write(b)
			}
			if st.Error != "" && st.Status == sandbox.StatusExited {
				fmt.Fprintf(os.Stderr, "coffer: %s\n", st.Error)
			}
			return nil
		},
	}
}

func newPsCmd(g *globalOpts) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List pods",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pods, err := sandbox.ListPods(sandbox.RuntimeDir())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if quiet {
				for _, p := range pods {
					fmt.Fprintln(out, p.Name)
				}
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATUS\tCREATED\tACCEL\tQEMU PID\tCOMMAND")
			for _, p := range pods {
				status := p.EffectiveStatus()
				switch {
				case status == sandbox.StatusExited && p.Error != "":
					status = "failed (see coffer logs)"
				case status == sandbox.StatusExited && p.ExitStatus != nil:
					status = fmt.Sprintf("exited (%d)", *p.ExitStatus)
				}
				qpid := "-"
				if p.QEMUPID > 0 && status == sandbox.StatusRunning {
					qpid = strconv.Itoa(p.QEMUPID)
					if podPaused(cmd.Context(), p.Name) {
						status = "paused"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Name, status, ago(p.Created), orDash(p.Accel), qpid, truncate(strings.Join(p.Command, " "), 40))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print names only")
	return cmd
}

// podPaused asks a running pod's agent whether its container is paused
// (briefly: a pod that does not answer is shown as running).
func podPaused(ctx context.Context, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	agent, closer, err := sandbox.DialProxy(ctx, sandbox.PodDir(sandbox.RuntimeDir(), name))
	if err != nil {
		return false
	}
	defer closer()
	r, err := agent.ListContainers(ctx, &api.ListContainersRequest{})
	if err != nil {
		return false
	}
	for _, c := range r.Containers {
		if c.ContainerId == sandbox.ContainerID {
			return c.Status == "paused"
		}
	}
	return false
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

// openPod finds a running pod and connects to its agent proxy.
func openPod(ctx context.Context, name string) (api.AgentService, func() error, *sandbox.State, error) {
	if err := sandbox.CheckName(name); err != nil {
		return nil, nil, nil, err
	}
	dir := sandbox.PodDir(sandbox.RuntimeDir(), name)
	st, err := sandbox.ReadState(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil, fmt.Errorf("no pod named %q (see `coffer ps`)", name)
		}
		return nil, nil, nil, err
	}
	if s := st.EffectiveStatus(); s != sandbox.StatusRunning {
		return nil, nil, st, fmt.Errorf("pod %q is not running (status %s)", name, s)
	}
	agent, closer, err := sandbox.DialProxy(ctx, dir)
	if err != nil {
		return nil, nil, st, err
	}
	return agent, closer, st, nil
}

func newExecCmd(g *globalOpts) *cobra.Command {
	var interactive, tty bool
	var env []string
	var workdir, user string
	cmd := &cobra.Command{
		Use:   "exec [flags] NAME -- CMD [ARGS...]",
		Short: "Run a command in a running pod's container",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			log := g.logger()
			agent, closer, _, err := openPod(ctx, args[0])
			if err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			defer closer()
			cmdArgs := args[1:]
			if len(cmdArgs) > 0 && cmdArgs[0] == "--" {
				cmdArgs = cmdArgs[1:]
			}
			so := sandbox.SpecOptions{Args: cmdArgs, Env: env, Cwd: workdir, Terminal: tty}
			if so.UID, so.GID, err = checkProcessFlags(env, workdir, user); err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			spec, err := sandbox.BuildSpec(so)
			if err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			proc, _ := json.Marshal(spec.Process)
			b := make([]byte, 6)
			_, _ = rand.Read(b)
			execID := "exec-" + hex.EncodeToString(b)
			cid := sandbox.ContainerID
			sigs := make(chan os.Signal, 16)
			signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH)
			defer signal.Stop(sigs)
			if _, err := agent.ExecProcess(ctx, &api.ExecProcessRequest{ContainerId: cid, ExecId: execID, Process: proc}); err != nil {
				return startError(sandbox.AgentError(err))
			}
			res, err := attach(ctx, log, agent, cid, execID, tty, interactive, sigs, nil, func() (*api.WaitProcessResponse, error) {
				r, err := agent.WaitProcess(ctx, &api.WaitProcessRequest{ContainerId: cid, ExecId: execID})
				if err != nil {
					return nil, fmt.Errorf("wait for the exec: %w", sandbox.AgentError(err))
				}
				return r, nil
			})
			if err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			if res.ExitStatus != 0 {
				return &exitError{code: int(res.ExitStatus)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&interactive, "interactive", "i", false, "keep stdin open")
	f.BoolVarP(&tty, "tty", "t", false, "allocate a terminal")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE)")
	f.StringVarP(&workdir, "workdir", "w", "", "working directory")
	f.StringVarP(&user, "user", "u", "", "UID[:GID] to run as")
	return cmd
}

func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q (use a name like TERM or a number)", s)
}

func newKillCmd(g *globalOpts) *cobra.Command {
	var sigName string
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] NAME",
		Short: "Send a signal (default KILL, which returns once the exit is recorded) to a running pod's container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig, err := parseSignal(sigName)
			if err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			agent, closer, _, err := openPod(cmd.Context(), args[0])
			if err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			_, err = agent.SignalProcess(cmd.Context(), &api.SignalProcessRequest{ContainerId: sandbox.ContainerID, Signal: uint32(sig), All: sig == unix.SIGKILL})
			// Hang up at once: the pod's proxy waits for its clients
			// before the pod's teardown, which waitExited waits for.
			_ = closer()
			if err != nil {
				return &exitError{code: exitCofferError, err: sandbox.AgentError(err)}
			}
			if sig == unix.SIGKILL {
				// As `docker kill`: return once the pod shows the exit,
				// so that `coffer kill x && coffer rm x` works.
				return waitExited(cmd.Context(), args[0], 10*time.Second)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&sigName, "signal", "s", "KILL", "signal to send")
	return cmd
}

// newPauseCmd makes `coffer pause` (pause) and `coffer unpause` (!pause):
// the container's cgroup in the guest is frozen or thawed.
func newPauseCmd(pause bool) *cobra.Command {
	use, short := "pause NAME", "Freeze every process of a running pod's container (cgroup freezer in the guest)"
	if !pause {
		use, short = "unpause NAME", "Thaw a paused pod's container"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			agent, closer, _, err := openPod(cmd.Context(), args[0])
			if err != nil {
				return &exitError{code: exitCofferError, err: err}
			}
			defer closer()
			if pause {
				_, err = agent.PauseContainer(cmd.Context(), &api.PauseContainerRequest{ContainerId: sandbox.ContainerID})
			} else {
				_, err = agent.ResumeContainer(cmd.Context(), &api.ResumeContainerRequest{ContainerId: sandbox.ContainerID})
			}
			if err != nil {
				return &exitError{code: exitCofferError, err: sandbox.AgentError(err)}
			}
			return nil
		},
	}
}

// waitExited waits until the pod's state no longer says running.
func waitExited(ctx context.Context, name string, timeout time.Duration) error {
	dir := sandbox.PodDir(sandbox.RuntimeDir(), name)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		st, err := sandbox.ReadState(dir)
		if err != nil || st.EffectiveStatus() != sandbox.StatusRunning {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return &exitError{code: exitCofferError, err: fmt.Errorf("pod %q was sent SIGKILL but still shows running after %s (see `coffer ps`)", name, timeout)}
}

func newRmCmd(g *globalOpts) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] NAME...",
		Short: "Remove stopped pods (-f: stop running ones first)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var errs []error
			for _, name := range args {
				if err := removePod(cmd.Context(), name, force); err != nil {
					errs = append(errs, err)
				}
			}
			if len(errs) > 0 {
				return &exitError{code: 1, err: errors.Join(errs...)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running pod before removing it")
	return cmd
}

func removePod(ctx context.Context, name string, force bool) error {
	if err := sandbox.CheckName(name); err != nil {
		return err
	}
	dir := sandbox.PodDir(sandbox.RuntimeDir(), name)
	st, err := sandbox.ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return fmt.Errorf("no pod named %q", name)
		}
		return sandbox.RemovePodDir(dir)
	}
	if err == nil && st.Status == sandbox.StatusExited {
		// The owner records the exit, then tears down (at most ~20 s:
		// the proxy's drain and the VM's stop) and leaves.
		for deadline := time.Now().Add(25 * time.Second); st.OwnerAlive() && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if err == nil && st.OwnerAlive() {
		if !force {
			return fmt.Errorf("pod %q is %s: stop it first (`coffer kill %s`) or use `coffer rm -f`", name, st.Status, name)
		}
		_ = unix.Kill(st.OwnerPID, unix.SIGTERM)
		deadline := time.Now().Add(20 * time.Second)
		for st.OwnerAlive() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if st.OwnerAlive() {
			_ = unix.Kill(st.OwnerPID, unix.SIGKILL)
		}
	}
	return sandbox.RemovePodDir(dir)
}
