package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/treecast/treecast/relay"
)

// How the command line is read, beyond what urfave/cli does by itself:
// flags before or after arguments, --verbose after the command, one-line
// usage errors, unknown commands named, --version, and the signal that
// stopped a command.

// run runs app on args (args[0] is the program) as a person would type them.
func run(ctx context.Context, app *cli.App, args []string) error {
	prepare(app)
	return app.RunContext(ctx, reorderArgs(app, args))
}

// versionFlag prints the version, as the version command does.
var versionFlag = &cli.BoolFlag{Name: "version", Aliases: []string{"v"}, Usage: "print the version and protocol version"}

// prepare gives app and each of its commands one-line usage errors, and
// app the --version flag and an action that names an unknown command.
func prepare(app *cli.App) {
	app.Flags = append(app.Flags, versionFlag)
	app.OnUsageError = usageError
	if app.Action == nil {
		app.Action = rootAction
	}
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if c.OnUsageError == nil {
				c.OnUsageError = usageError
			}
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
}

// rootAction runs when no command was named: --version, help, or an unknown
// command.
func rootAction(c *cli.Context) error {
	if c.Bool(versionFlag.Name) {
		fmt.Fprintln(c.App.Writer, versionText())
		return nil
	}
	if !c.Args().Present() {
		return cli.ShowAppHelp(c)
	}
	name := c.Args().First()
	var names []string
	for _, cmd := range c.App.VisibleCommands() {
		names = append(names, cmd.Names()...)
	}
	return usage("unknown command %q%s; see %s --help", name, suggest(name, names, ""), c.App.Name)
}

func versionText() string {
	return fmt.Sprintf("%s, protocol %d", currentBuild(), relay.Version)
}

// reorderArgs moves a command's flags before its arguments, since the flag
// parser stops at the first argument: `seed FILE --expect 3` is read as
// `seed --expect 3 FILE`. A flag that takes a value keeps it (the next word,
// unless written --flag=value); `--` ends the flags, and what follows it
// stays an argument. The app's own flags (--verbose) given after the command
// move before it. Words before the command, an unknown command, and a
// command with subcommands named are walked the same way, one level at a
// time.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	root := flagKinds(app.Flags)
	out := []string{args[0]}
	i := 1
	for i < len(args) && isFlag(args[i]) && args[i] != "--" {
		n := flagWords(root, args[i:])
		out = append(out, args[i:i+n]...)
		i += n
	}
	cmd := (*cli.Command)(nil)
	if i < len(args) {
		cmd = findCommand(app.Commands, args[i])
	}
	if cmd == nil {
		return append(out, args[i:]...)
	}
	hoist := flagKinds(slices.DeleteFunc(slices.Clone(app.Flags), func(f cli.Flag) bool { return f == versionFlag }))
	var global []string
	rest := reorderCommand(cmd, args[i:], hoist, &global)
	return append(append(out, global...), rest...)
}

// reorderCommand reorders the words of cmd, args[0] being its name. Flags
// of the app (hoist) that cmd does not define go to *global.
func reorderCommand(cmd *cli.Command, args []string, hoist map[string]*bool, global *[]string) []string {
	kinds := flagKinds(cmd.Flags)
	var flags, pos []string
	dashes, dangling := false, false
	for i := 1; i < len(args); {
		a := args[i]
		switch {
		case dashes || !isFlag(a):
			if !dashes && len(pos) == 0 && len(cmd.Subcommands) > 0 {
				if sub := findCommand(cmd.Subcommands, a); sub != nil {
					out := append([]string{args[0]}, flags...)
					return append(out, reorderCommand(sub, args[i:], hoist, global)...)
				}
			}
			pos = append(pos, a)
			i++
		case a == "--":
			dashes = true
			i++
		case kinds[flagName(a)] == nil && hoist[flagName(a)] != nil:
			n := flagWords(hoist, args[i:])
			*global = append(*global, args[i:i+n]...)
			i += n
		default:
			n := flagWords(kinds, args[i:])
			dangling = n == 1 && needsValue(kinds, a)
			flags = append(flags, args[i:i+n]...)
			i += n
		}
	}
	out := append([]string{args[0]}, flags...)
	if dangling {
		// A flag that wants a value ends the line: left last, so the
		// parser says so instead of taking an argument for its value.
		return out
	}
	if dashes {
		out = append(out, "--")
	}
	return append(out, pos...)
}

// flagKinds maps each name of flags to whether it takes a value.
func flagKinds(flags []cli.Flag) map[string]*bool {
	kinds := map[string]*bool{}
	for _, f := range flags {
		takes := true
		if df, ok := f.(cli.DocGenerationFlag); ok {
			takes = df.TakesValue()
		}
		for _, n := range f.Names() {
			kinds[n] = &takes
		}
	}
	return kinds
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' }

// flagName is the name of the flag word a: "--expect=3" is "expect".
func flagName(a string) string {
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	return name
}

// needsValue reports whether the flag word a takes the next word as its value.
func needsValue(kinds map[string]*bool, a string) bool {
	takes := kinds[flagName(a)]
	return takes != nil && *takes && !strings.Contains(a, "=")
}

// flagWords is how many words of args, which start with a flag, are that
// flag: 2 for a flag and its value, else 1. A flag that wants a value but
// ends the line is 1.
func flagWords(kinds map[string]*bool, args []string) int {
	if needsValue(kinds, args[0]) && len(args) > 1 {
		return 2
	}
	return 1
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// What the flag package says of a bad flag, and what urfave/cli says of a
// bad TREECAST_* variable.
var (
	reBadValue   = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for (?:flag )?-+([^:]+): (.*)$`)
	reUndefined  = regexp.MustCompile(`^flag provided but not defined: -+(.+)$`)
	reNoValue    = regexp.MustCompile(`^flag needs an argument: -+(.+)$`)
	reBadEnvFlag = regexp.MustCompile(`^could not parse "(.*)" as \w+ value from environment variable "([^"]+)" for flag ([^:]+): (.*)$`)
)

// usageError turns a flag the parser refused into one line: what was
// wrong, what the flag takes, and where the help is. urfave/cli would print
// the whole help and the flag package's "parse error".
func usageError(c *cli.Context, err error, _ bool) error {
	cmd := c.Command
	help := fmt.Sprintf("; see %s --help", cmd.HelpName)
	prefix := ""
	if cmd.HelpName != c.App.HelpName {
		prefix = cmd.Name + ": "
	}
	msg := err.Error()
	if m := reBadValue.FindStringSubmatch(msg); m != nil {
		return usage("%s--%s %q: want %s%s", prefix, m[2], m[1], want(cmd.Flags, m[2]), help)
	}
	if m := reBadEnvFlag.FindStringSubmatch(msg); m != nil {
		return usage("%s%s=%q (--%s): want %s%s", prefix, m[2], m[1], m[3], want(cmd.Flags, m[3]), help)
	}
	if m := reNoValue.FindStringSubmatch(msg); m != nil {
		return usage("%s--%s needs a value: %s%s", prefix, m[1], want(cmd.Flags, m[1]), help)
	}
	if m := reUndefined.FindStringSubmatch(msg); m != nil {
		var names []string
		for _, f := range cmd.VisibleFlags() {
			names = append(names, f.Names()...)
		}
		where := ""
		if prefix == "" {
			where = " (a command's flags go after the command's name)"
		}
		return usage("%sunknown flag --%s%s%s%s", prefix, m[1], suggest(m[1], names, "--"), where, help)
	}
	return usage("%s%v%s", prefix, err, help)
}

// want says what the flag called name takes.
func want(flags []cli.Flag, name string) string {
	for _, f := range flags {
		if !slices.Contains(f.Names(), name) {
			continue
		}
		switch f.(type) {
		case *cli.DurationFlag:
			return "a duration with a unit, such as 30s, 2m or 1h30m"
		case *cli.IntFlag:
			return "a whole number, such as 3"
		case *cli.BoolFlag:
			return "true or false, or the flag alone for true"
		}
		if df, ok := f.(cli.DocGenerationFlag); ok {
			// The usage names the value in backquotes: "at `PATH`".
			usage := df.GetUsage()
			name := "a value"
			if _, rest, ok := strings.Cut(usage, "`"); ok {
				if n, _, ok := strings.Cut(rest, "`"); ok {
					name = n
				}
			}
			return fmt.Sprintf("%s (%s)", name, strings.ReplaceAll(usage, "`", ""))
		}
	}
	return "a value"
}

// suggest returns ` (did you mean X?)` for the name in names closest to
// got, if one is close, else "".
func suggest(got string, names []string, dash string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(got, n); d < bestD && len(n) > 1 {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s%s?)", dash, best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// noStrayArgs refuses more than max arguments. (A flag after the arguments
// was moved before them by reorderArgs; a word starting with - that is left
// came after --, and is an argument.)
func noStrayArgs(c *cli.Context, max int) error {
	if args := c.Args().Slice(); len(args) > max {
		return usage("%s: unexpected argument %q; see treecast %s --help", c.Command.Name, args[max], c.Command.Name)
	}
	return nil
}

// stopSignal is why the root context ended when a signal stopped
// treecast. signal.NotifyContext would not say which signal it was, and the
// exit code depends on it.
type stopSignal struct{ sig syscall.Signal }

func (s stopSignal) Error() string { return "stopped by " + s.name() }

func (s stopSignal) name() string {
	switch s.sig {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return s.sig.String()
}

// code is the exit code of a command the signal stopped, as shells report
// it: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.
func (s stopSignal) code() int { return 128 + int(s.sig) }

// signalContext returns a context that the first SIGINT or SIGTERM cancels,
// with a stopSignal as its cause. A second signal has its default effect,
// ending treecast at once if stopping hangs. stop releases the signals.
func signalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case s := <-ch:
			signal.Stop(ch)
			cancel(stopSignal{s.(syscall.Signal)})
		case <-done:
		}
	})
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
		cancel(nil)
	}
}

// stoppedBy reports the signal that ended ctx, if one did.
func stoppedBy(ctx context.Context) (stopSignal, bool) {
	var s stopSignal
	ok := errors.As(context.Cause(ctx), &s)
	return s, ok
}
