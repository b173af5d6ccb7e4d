// Command treecast puts a package on every machine of a LAN fleet by
// relaying it peer to peer along a binary tree.
package main

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/treecast/treecast/discover"
	"github.com/treecast/treecast/install"
	"github.com/treecast/treecast/relay"
)

// Exit codes, a contract with scripts.
const (
	exitOK       = 0 // every planned node applied the package, or had it already (up to date)
	exitFailed   = 1 // some node failed or was busy, fewer receivers than expected, or treecast could not run here (key, --dir, listen, announce)
	exitUsage    = 2 // bad flags, arguments or settings: nothing was started
	exitNotFound = 3 // seed: no receivers; join: no session before --timeout
	exitReport   = 4 // seed: the --report file could not be written
	// A command stopped by SIGINT (Ctrl-C) exits 130, by SIGTERM 143: see stopSignal.
)

// exitError carries the exit code an error maps to.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usage(format string, a ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, a...)}
}

// failed is a runtime failure: the command was right, but could not be done here.
func failed(format string, a ...any) error {
	return &exitError{exitFailed, fmt.Errorf(format, a...)}
}

const exitHelp = `EXIT CODES:
   0  every planned node applied the package or had it already (seed), or this node
      applied it or had it already (join)
   1  some node failed or was busy with another session, or fewer receivers than --expect
      were found; or treecast could not run here: seed key unreadable or unprotected,
      --dir in use, listen, announce
   2  usage or configuration error: a bad flag, argument or setting (nothing started)
   3  nothing found: no receivers (seed), or no session before --timeout (join)
   4  seed: the --report file could not be written (the table still says how every
      node fared); it wins over 0, 1 and 3
 130  stopped by Ctrl-C (SIGINT), 143 by SIGTERM: the seed prints the table so far and
      writes the report; run the same command again to resume`

func main() {
	ctx, stop := signalContext(context.Background())
	err := run(ctx, newApp(), os.Args)
	stop()
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "treecast:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(exitUsage) // errors urfave/cli finds itself
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "treecast",
		Usage: "put a package on every machine of a LAN, relayed peer to peer along a binary tree",
		Description: `Run "treecast serve" (an agent) or "treecast join" (one session) on every receiver,
then "treecast seed FILE" on one machine. Receivers announce themselves over mDNS
(_treecast._tcp); the seed finds them, signs the session, and streams the package down
a binary tree in which every node relays verified chunks to two others while it applies.
Flags go before or after arguments; after --, every word is an argument.
Settings: flag > TREECAST_* environment > --config file > default.
Sizes: 4096, 256KiB, 1MiB, 2GiB (binary) or 500KB, 1MB, 2GB (decimal: 1MB is 1000000 bytes).`,
		CustomAppHelpTemplate: cli.AppHelpTemplate + "\n" + exitHelp + "\n",
		HideVersion:           true,
		ExitErrHandler:        func(*cli.Context, error) {},
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Usage: "log every step to stderr", EnvVars: []string{"TREECAST_VERBOSE"}},
		},
		Commands: []*cli.Command{seedCommand(), joinCommand(), serveCommand(), peersCommand(), keygenCommand(), secretCommand(), versionCommand(), completionCommand(), manCommand()},
	}
}

// Flags shared by several commands. EnvVars make TREECAST_* work; a set flag
// or variable wins over the file.
var (
	configFlag  = &cli.StringFlag{Name: "config", Usage: "read settings from this TOML `FILE`", EnvVars: []string{"TREECAST_CONFIG"}}
	maxRateFlag = &cli.StringFlag{Name: "max-rate", Usage: "send at most `RATE` to all children together (20mbit, 1.5gbit, 5MB/s, 2MiB/s), so the rest of the network stays usable", DefaultText: "no cap", EnvVars: []string{"TREECAST_MAX_RATE"}}
	secretFlag  = &cli.StringFlag{Name: "secret", Usage: "the fleet secret at `FILE` (make one with `treecast secret`): only hosts holding it take part, and blocks travel encrypted", EnvVars: []string{"TREECAST_SECRET"}}
	ifaceFlag   = &cli.StringSliceFlag{Name: "iface", Usage: "use only this network interface `NAME` (repeatable, or comma-separated)", DefaultText: "every up multicast interface with a private address", EnvVars: []string{"TREECAST_IFACE"}}
)

func groupFlag(usage string) *cli.StringFlag {
	return &cli.StringFlag{Name: "group", Usage: usage, EnvVars: []string{"TREECAST_GROUP"}}
}

// parseSize reads a size as install does, so every flag takes the same.
func parseSize(s string) (int64, error) { return install.ParseSize(s) }

// sizeForms says which sizes parseSize takes.
const sizeForms = install.SizeForms

// --- seed ---------------------------------------------------------------

func seedCommand() *cli.Command {
	return &cli.Command{
		Name:      "seed",
		Usage:     "find receivers, stream FILE to all of them along a binary tree, and report",
		ArgsUsage: "FILE",
		Description: `Finds receivers by mDNS until --expect are found or --wait passes, signs the
session with the seed key, streams FILE down a binary tree, shows progress, and prints
one line per node and a summary. FILE may be of any size, 0 bytes included.

The first run creates a seed key and prints the --trust value receivers need.

   treecast seed --expect 30 --report result.json app.tar.gz

` + exitHelp,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "expect", Usage: "start as soon as `N` receivers are found; fewer than N is a failure (exit 1)", EnvVars: []string{"TREECAST_EXPECT"}},
			&cli.DurationFlag{Name: "wait", Usage: "look for receivers at most this `DURATION`, then start with those found; a receiver busy with another session is waited for until DURATION has passed", DefaultText: "10s", EnvVars: []string{"TREECAST_WAIT"}},
			&cli.BoolFlag{Name: "force", Usage: "apply FILE again on receivers that applied it already with the same actions (else they answer up to date, and nothing runs there)", EnvVars: []string{"TREECAST_FORCE"}},
			groupFlag("only receivers announcing this group `NAME`"),
			ifaceFlag,
			&cli.StringFlag{Name: "report", Usage: "write the outcome as JSON to `PATH`", EnvVars: []string{"TREECAST_REPORT"}},
			&cli.StringSliceFlag{Name: "peer", Usage: "also send to the receiver at `HOST:PORT` (repeatable), where mDNS does not reach: another subnet, a switch that drops multicast; it listens there with --listen :PORT", EnvVars: []string{"TREECAST_PEER"}},
			&cli.StringFlag{Name: "peers", Usage: "also send to the receivers listed in `FILE`, one HOST:PORT a line (# comments)", EnvVars: []string{"TREECAST_PEERS"}},
			jsonFlag("print the outcome as JSON on stdout, the document --report writes, however the run ends; the table and the rest go to stderr"),
			&cli.StringFlag{Name: "chunk-size", Usage: "chunk `SIZE`, 4KiB to 16MiB, a multiple of 4KiB", DefaultText: "1MiB", EnvVars: []string{"TREECAST_CHUNK_SIZE"}},
			&cli.StringFlag{Name: "key", Usage: "sign with the seed key at `PATH`", DefaultText: "~/.config/treecast/seed.key, created on first use", EnvVars: []string{"TREECAST_KEY"}},
			secretFlag,
			maxRateFlag,
			&cli.StringFlag{Name: "compress", Usage: "`on`: blocks that shrink with zstd travel compressed (receivers forward them so); off: every block as it is", DefaultText: "on", EnvVars: []string{"TREECAST_COMPRESS"}},
			&cli.StringFlag{Name: "fault-save-session", Hidden: true, Usage: "fault injection for lab tests: write the signed session to `PATH`"},
			&cli.StringFlag{Name: "fault-replay-session", Hidden: true, Usage: "fault injection for lab tests: offer the signed session saved at `PATH` instead of a new one, as a replaying attacker would"},
			configFlag,
		},
		Action: runSeed,
	}
}

func defaultKeyPath() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "."
	}
	return filepath.Join(dir, "treecast", "seed.key")
}

func runSeed(c *cli.Context) error {
	if err := noStrayArgs(c, 1); err != nil {
		return err
	}
	if c.NArg() != 1 {
		return usage("seed: name the FILE to distribute: treecast seed [flags] FILE; see treecast seed --help")
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	sc := &cfg.Seed
	fromFlag(cfg, c, "expect", "seed.expect", &sc.Expect, c.Int)
	fromFlag(cfg, c, "wait", "seed.wait", &sc.Wait, c.Duration)
	fromFlag(cfg, c, "group", "seed.group", &sc.Group, c.String)
	fromFlag(cfg, c, "iface", "discover.iface", &cfg.Discover.Iface, ifaces(c))
	fromFlag(cfg, c, "report", "seed.report", &sc.Report, c.String)
	fromFlag(cfg, c, "peer", "seed.peers", &sc.Peers, c.StringSlice)
	fromFlag(cfg, c, "peers", "seed.peers_file", &sc.PeersFile, c.String)
	fromFlag(cfg, c, "chunk-size", "seed.chunk_size", &sc.ChunkSize, c.String)
	fromFlag(cfg, c, "key", "seed.key", &sc.Key, c.String)
	fromFlag(cfg, c, "secret", "seed.secret", &sc.Secret, c.String)
	fromFlag(cfg, c, "compress", "seed.compress", &sc.Compress, c.String)
	fromFlag(cfg, c, "max-rate", "relay.max_rate", &cfg.Relay.MaxRate, c.String)
	if err := cmp.Or(cfg.checkSeed("seed"), cfg.checkDiscover("seed"), cfg.checkRelay("seed")); err != nil {
		return err
	}
	chunk, _ := chunkSize(sc.ChunkSize)
	path := c.Args().First()
	st, err := os.Stat(path)
	if err != nil {
		return usage("seed: %v", err)
	}
	if !st.Mode().IsRegular() {
		return usage("seed: %s is not a regular file (to send a directory, pack it: tar czf pkg.tar.gz DIR)", path)
	}
	if err := cfg.checkReport("seed"); err != nil {
		return err
	}
	key, keyPath, created, err := cfg.seedKey("seed")
	if err != nil {
		return err
	}
	con := newConsole()
	log := newLogger(c, con)
	fp := relay.Fingerprint(key.Public().(ed25519.PublicKey))
	if created {
		con.printf("treecast: created seed key %s\n", keyPath)
	}
	if sc.Secret != "" {
		con.printf("treecast: seed key %s; receivers run: treecast join --trust %s --secret %s --to DIR\n", fp, fp, sc.Secret)
	} else {
		con.printf("treecast: seed key %s; receivers run: treecast join --trust %s --to DIR\n", fp, fp)
	}

	var secret *relay.Secret
	if sc.Secret != "" {
		if secret, err = relay.LoadSecret(sc.Secret); err != nil {
			return failed("seed: secret: %v", err)
		}
	}

	// From here on, every outcome is printed and written to the report.
	ctx := c.Context
	end := &seedEnd{ctx: ctx, con: con, out: os.Stdout, report: sc.Report, reportName: cfg.name("seed.report"), expect: sc.Expect, start: time.Now()}
	if c.Bool("json") {
		end.out, end.json = con, os.Stdout
	}
	m, err := relay.BuildManifest(ctx, path, chunk, cfg.Relay.SessionTTL, func(done int64) {
		if st.Size() > 256<<20 {
			con.progress(done, st.Size(), "hashing "+st.Name())
		}
	})
	con.endProgress()
	if err != nil {
		return end.finish(end.emptyReport(relay.ReportPackage{Name: st.Name(), Size: st.Size()}), failed("seed: %v", err))
	}
	nothingSent := func() *relay.Report {
		return end.emptyReport(relay.ReportPackage{Name: m.Name, Size: m.Size, SHA256: m.SumHex()})
	}

	given, err := givenPeers(sc.Peers, sc.PeersFile)
	if err != nil {
		return usage("seed: %v", err)
	}
	expect := sc.Expect
	if expect > 0 {
		expect = max(expect-len(given), 0)
	}
	con.printf("treecast: looking for receivers (%s)\n", lookingFor(sc, cfg.Discover))
	waitEnds := time.Now().Add(sc.Wait) // for receivers, and for busy ones to be free
	var found []discover.Peer
	if sc.Expect == 0 || expect > 0 {
		found, err = discover.Browse(ctx, cfg.Discover, discover.BrowseOptions{
			Group: sc.Group, Expect: expect, Wait: sc.Wait,
			OnPeer: func(p discover.Peer) {
				log.Info("found receiver", "name", p.Name, "addr", p.Addr, "state", p.State)
			},
		}, log)
	}
	if ctx.Err() != nil {
		return end.finish(nothingSent(), ctx.Err())
	}
	if err != nil && len(found) == 0 && len(given) == 0 {
		if discover.IsNoInterface(err) {
			return usage("seed: %v", err)
		}
		return end.finish(nothingSent(), &exitError{exitNotFound, fmt.Errorf("seed: %w", err)})
	}
	admit := newAdmission(sc.Group, log)
	peers := withGiven(admit.peers(found), given)
	if len(peers) == 0 && len(found) > 0 {
		return end.finish(nothingSent(), &exitError{exitNotFound, fmt.Errorf("seed: found %d receivers and skipped every one, as the warnings above say", len(found))})
	}
	if len(peers) == 0 {
		return end.finish(nothingSent(), &exitError{exitNotFound, fmt.Errorf("no receivers found in %s: start `treecast join` or `treecast serve` on them, on the same LAN%s", sc.Wait, groupHint(sc.Group))})
	}
	con.printf("treecast: sending %s (%s, sha256 %s) to %d receivers\n", m.Name, relay.HumanBytes(m.Size), m.SumHex()[:16], len(peers))

	m.Group, m.Force = sc.Group, c.Bool("force")
	signed, err := sessionFor(c, m, key)
	if err != nil {
		return err
	}
	sctx, stopWatch := context.WithCancel(ctx)
	late := make(chan relay.Peer)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchPeers(sctx, cfg.Discover, sc.Group, admit, late, log)
	}()
	rep, err := relay.RunSeed(ctx, cfg.Relay, relay.SeedOptions{
		Secret:   secret,
		Compress: sc.Compress == "on",
		Signed:   signed,
		Path:     path,
		Peers:    peers,
		Late:     late,
		WaitBusy: waitEnds,
		Log:      log,
		Progress: con.seedProgress,
	})
	stopWatch()
	<-watched
	con.endProgress()
	if rep == nil {
		rep = nothingSent()
	}
	if err != nil {
		err = failed("seed: %v", err)
	}
	return end.finish(rep, err)
}

// sessionFor signs m, unless a lab test replays a saved session.
func sessionFor(c *cli.Context, m *relay.Manifest, key ed25519.PrivateKey) (*relay.Signed, error) {
	if path := c.String("fault-replay-session"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, usage("seed: %v", err)
		}
		s, err := relay.ParseSigned(b)
		if err != nil {
			return nil, usage("seed: %s: %v", path, err)
		}
		if s.Manifest.SHA256 != m.SHA256 {
			return nil, usage("seed: %s is a session for another file", path)
		}
		return s, nil
	}
	s := relay.Sign(m, key)
	if path := c.String("fault-save-session"); path != "" {
		if err := os.WriteFile(path, s.Bytes(), 0o600); err != nil {
			return nil, usage("seed: %v", err)
		}
	}
	return s, nil
}

// conflictHelp says what a node id that answers from two addresses means,
// and what to do about it.
const conflictHelp = "two machines share the node id (if one's state dir is a copy of the other's, delete node-id in it and restart it), " +
	"one of them spoofs it, or this host reaches one receiver on two networks (name one with --iface); a seed sends to neither address"

// maxWarned bounds the receivers a seed remembers having warned about, so a
// flood of fake answers cannot grow it without end.
const maxWarned = 4096

// admission turns the receivers discovery found into session peers. It skips
// a receiver whose node id answered from two addresses or that speaks another
// protocol version, and warns once about each it skips, however often a
// browse finds it again.
type admission struct {
	group  string // receivers of another group refuse the session: skipped
	log    *slog.Logger
	warned map[discover.Peer]bool // skipped receivers, with State cleared
}

func newAdmission(group string, log *slog.Logger) *admission {
	return &admission{group: group, log: log, warned: make(map[discover.Peer]bool)}
}

func (a *admission) peers(found []discover.Peer) []relay.Peer {
	var peers []relay.Peer
	for _, p := range found {
		if rp, ok := a.peer(p); ok {
			peers = append(peers, rp)
		}
	}
	return peers
}

func (a *admission) peer(p discover.Peer) (relay.Peer, bool) {
	if p.Group != a.group {
		// Its agent refuses a session for another group.
		a.log.Debug("skipping receiver of another group", "name", p.Name, "addr", p.Addr, "group", p.Group)
		return relay.Peer{}, false
	}
	id, err := relay.ParseNodeID(p.ID)
	if err == nil && p.Version == relay.Version && !p.Conflicted() {
		return relay.Peer{ID: id, Name: p.Name, Addr: p.Addr, Busy: p.State != discover.StateIdle}, true
	}
	key := p
	key.State = ""
	if a.warned[key] {
		return relay.Peer{}, false
	}
	if len(a.warned) >= maxWarned {
		clear(a.warned)
	}
	a.warned[key] = true
	if p.Conflicted() {
		a.log.Warn("skipping receiver: its node id answers from two addresses: "+conflictHelp,
			"name", p.Name, "id", p.ID, "addr", p.Addr, "other", p.Conflict)
	} else {
		a.log.Warn("skipping receiver: it speaks another protocol version", "name", p.Name, "addr", p.Addr, "version", p.Version, "want", relay.Version)
	}
	return relay.Peer{}, false
}

// watchWait is how long one browse of the peer watcher listens: a
// receiver that appears mid-session waits about this long to be found.
const watchWait = 2 * time.Second

// watchPeers keeps browsing while a session runs and hands every receiver
// admit lets in to the session, which attaches new ones and lets lost ones
// rejoin.
func watchPeers(ctx context.Context, dc discover.Config, group string, admit *admission, late chan<- relay.Peer, log *slog.Logger) {
	discover.Watch(ctx, dc, discover.BrowseOptions{Group: group, Wait: watchWait}, func(found []discover.Peer) {
		for _, rp := range admit.peers(found) {
			select {
			case late <- rp:
			case <-ctx.Done():
				return
			}
		}
	}, log)
}

func lookingFor(sc *seedConfig, dc discover.Config) string {
	var parts []string
	if sc.Expect > 0 {
		parts = append(parts, fmt.Sprintf("until %d found", sc.Expect))
	}
	parts = append(parts, "at most "+sc.Wait.String())
	if sc.Group != "" {
		parts = append(parts, "group "+sc.Group)
	}
	if ifs, err := discover.Interfaces(dc); err == nil {
		var names []string
		for _, ifi := range ifs {
			names = append(names, ifi.Name)
		}
		parts = append(parts, "on "+strings.Join(names, " and "))
	}
	return strings.Join(parts, ", ")
}

func groupHint(g string) string {
	if g == "" {
		return ""
	}
	return fmt.Sprintf(" and with --group %s", g)
}

// --- join and serve --------------------------------------------------------

func receiverFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "to", Usage: "place the verified file atomically at `DIR`/<package name> (DIR is created)", EnvVars: []string{"TREECAST_TO"}},
		&cli.StringFlag{Name: "extract", Usage: "unpack a .tar, .tar.gz or .zip package into `DIR`; unsafe entries fail the apply", EnvVars: []string{"TREECAST_EXTRACT"}},
		&cli.BoolFlag{Name: "stdin", Usage: "with --exec: run CMD once, from the start, and feed it the verified package on its stdin in order as it arrives (e.g. --exec 'tar x -C /opt/app' --stdin); a slow CMD never slows the relaying", EnvVars: []string{"TREECAST_STDIN"}},
		&cli.StringFlag{Name: "write", Usage: "write the package straight to `TARGET`, a disk (/dev/sda) or an image file, block by block as it arrives: nothing is spooled, empty blocks are not sent, and resuming continues from what TARGET holds; a mounted disk is refused", EnvVars: []string{"TREECAST_WRITE"}},
		&cli.StringFlag{Name: "exec", Usage: "run `CMD` with sh -c; env TREECAST_FILE, TREECAST_NAME, TREECAST_SHA256; non-zero exit fails", EnvVars: []string{"TREECAST_EXEC"}},
		&cli.StringFlag{Name: "max-extract-size", Usage: "fail an --extract archive that unpacks to more than `SIZE` (e.g. 2GiB), before writing any of it", DefaultText: "the free space of the --extract DIR less 1/20", EnvVars: []string{"TREECAST_MAX_EXTRACT_SIZE"}},
		&cli.IntFlag{Name: "max-extract-entries", Usage: "fail an --extract archive of more than `N` entries, before writing any of it", DefaultText: "100000", EnvVars: []string{"TREECAST_MAX_EXTRACT_ENTRIES"}},
		&cli.StringFlag{Name: "name", Usage: "`NAME` shown in the seed's report (default: host name)", EnvVars: []string{"TREECAST_NODE_NAME"}},
		groupFlag("announce membership of group `NAME`; seeds with --group pick only their group"),
		ifaceFlag,
		&cli.StringFlag{Name: "dir", Usage: "spool and state `DIR`, treecast's own (--to and --extract go elsewhere); two receivers on one machine need different ones", DefaultText: "/var/lib/treecast as root, else ~/.local/state/treecast", EnvVars: []string{"TREECAST_DIR"}},
		&cli.StringFlag{Name: "listen", Usage: "accept sessions on this TCP `ADDR`", DefaultText: ":0, any free port, announced over mDNS", EnvVars: []string{"TREECAST_LISTEN"}},
		&cli.StringSliceFlag{Name: "trust", Usage: "accept sessions signed by seed `KEY`: a fingerprint, a public key or a .pub file (repeatable)", EnvVars: []string{"TREECAST_TRUST"}},
		&cli.BoolFlag{Name: "trust-any", Usage: "accept sessions from any seed (anyone on the LAN can then make this machine apply a package)", EnvVars: []string{"TREECAST_TRUST_ANY"}},
		&cli.BoolFlag{Name: "allow-downgrade", Usage: "accept a session older than the last one applied here from the same seed key for the same group", EnvVars: []string{"TREECAST_ALLOW_DOWNGRADE"}},
		secretFlag,
		maxRateFlag,
		&cli.IntFlag{Name: "fault-corrupt-chunk", Hidden: true, Value: -1, Usage: "fault injection for lab tests: flip a bit in chunk `N` when relaying it"},
		&cli.BoolFlag{Name: "fault-accuse", Hidden: true, Usage: "fault injection for lab tests: accuse every parent of corrupt data"},
		&cli.BoolFlag{Name: "fault-silent", Hidden: true, Usage: "fault injection for lab tests: take a session, then only report holding nothing"},
		configFlag,
	}
}

func joinCommand() *cli.Command {
	flags := append(receiverFlags(), &cli.DurationFlag{Name: "timeout", Usage: "give up if no session starts within `DURATION`", DefaultText: "wait forever", EnvVars: []string{"TREECAST_TIMEOUT"}})
	return &cli.Command{
		Name:  "join",
		Usage: "receive one session: relay it to children, verify, apply, report, exit",
		Description: `Announces this machine over mDNS, waits for one session from a trusted seed, relays
its chunks to the children the seed assigns, applies the verified package, and exits
with the result. At least one of --to, --extract, --exec says what to do with it.

   treecast join --trust 3f9a-77c2-19ab-e0d4 --to /opt/pkg --timeout 10m

` + exitHelp,
		Flags:  flags,
		Action: func(c *cli.Context) error { return runReceiver(c, true) },
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run as an agent: accept sessions from trusted seeds, one after another, until stopped",
		Description: `A long-lived receiver for a fleet machine: announces itself over mDNS, takes one
session at a time, relays, applies, and waits for the next. Stop it with SIGTERM.

   treecast serve --trust /etc/treecast/seed.key.pub --extract /opt/app --exec 'systemctl restart app'`,
		Flags:  receiverFlags(),
		Action: func(c *cli.Context) error { return runReceiver(c, false) },
	}
}

func defaultDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/treecast"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "treecast")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "treecast")
	}
	return filepath.Join(os.TempDir(), "treecast")
}

func runReceiver(c *cli.Context, once bool) error {
	if err := noStrayArgs(c, 0); err != nil {
		return err
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	rc := &cfg.Receiver
	cmd := c.Command.Name
	fromFlag(cfg, c, "to", "install.to", &cfg.Install.To, c.String)
	fromFlag(cfg, c, "extract", "install.extract", &cfg.Install.Extract, c.String)
	fromFlag(cfg, c, "exec", "install.exec", &cfg.Install.Exec, c.String)
	fromFlag(cfg, c, "stdin", "install.stdin", &cfg.Install.Stdin, c.Bool)
	fromFlag(cfg, c, "max-extract-size", "install.max_extract_size", &cfg.Install.MaxExtractSize, c.String)
	fromFlag(cfg, c, "max-extract-entries", "install.max_extract_entries", &cfg.Install.MaxExtractEntries, c.Int)
	fromFlag(cfg, c, "name", "receiver.name", &rc.Name, c.String)
	fromFlag(cfg, c, "group", "receiver.group", &rc.Group, c.String)
	fromFlag(cfg, c, "iface", "discover.iface", &cfg.Discover.Iface, ifaces(c))
	fromFlag(cfg, c, "dir", "receiver.dir", &rc.Dir, c.String)
	fromFlag(cfg, c, "listen", "relay.listen", &cfg.Relay.Listen, c.String)
	if once {
		fromFlag(cfg, c, "timeout", "receiver.timeout", &rc.Timeout, c.Duration)
	}
	fromFlag(cfg, c, "trust", "receiver.trust", &rc.Trust, c.StringSlice)
	fromFlag(cfg, c, "trust-any", "receiver.trust_any", &rc.TrustAny, c.Bool)
	fromFlag(cfg, c, "secret", "receiver.secret", &rc.Secret, c.String)
	fromFlag(cfg, c, "write", "receiver.write", &rc.Write, c.String)
	fromFlag(cfg, c, "max-rate", "relay.max_rate", &cfg.Relay.MaxRate, c.String)
	fromFlag(cfg, c, "allow-downgrade", "receiver.allow_downgrade", &rc.AllowDowngrade, c.Bool)
	if err := cmp.Or(cfg.checkInstall(cmd), cfg.checkReceiver(cmd), cfg.checkDiscover(cmd), cfg.checkRelay(cmd), cfg.checkTargets(cmd)); err != nil {
		return err
	}
	var trust relay.TrustSet
	for _, t := range rc.Trust {
		if err := trust.Add(t); err != nil {
			return usage("%s: %v", cmd, err)
		}
	}
	if trust.Len() == 0 && !rc.TrustAny {
		return usage("%s: say which seed to trust: --trust FINGERPRINT (the seed prints it on every run; `treecast keygen` prints it too), or --trust-any to accept any seed on this LAN", cmd)
	}
	if rc.Name == "" {
		rc.Name, _ = os.Hostname()
	}
	if rc.Dir == "" {
		rc.Dir = defaultDir()
	}
	if err := checkStateDir(rc.Dir, cfg.Install, rc.Write); err != nil {
		return usage("%s: %v", c.Command.Name, err)
	}
	if rc.Write != "" {
		if err := relay.CheckWriteTarget(rc.Write); err != nil {
			return usage("%s: --write %s: %v", cmd, rc.Write, err)
		}
	}
	con := newConsole()
	log := newLogger(c, con)
	if rc.TrustAny {
		con.printf("treecast: warning: --trust-any: any seed on this LAN can make this machine apply a package\n")
	}

	unlock, err := lockDir(rc.Dir)
	if err != nil {
		return failed("%s: %v", cmd, err)
	}
	defer unlock()
	id, err := relay.LoadNodeID(rc.Dir)
	if err != nil {
		return failed("%s: %v", cmd, err)
	}

	var ann *discover.Announcer
	var annMu sync.Mutex
	opt := relay.ReceiverOptions{
		ID: id, Name: rc.Name, Dir: rc.Dir, Write: rc.Write, Log: log,
		Apply:  applyPackage(cfg.Install),
		Stream: streamPackage(cfg.Install),
		// a copy checks the whole file: read back as it comes, it is checked by then
		ReadBack: cfg.Install.To != "",
		Actions:  actionsFingerprint(cfg.Install, rc.Write),
		Progress: func(p relay.ReceiverProgress) {
			desc := "receiving " + p.Name
			if p.Applied {
				desc = "relaying " + p.Name
			}
			con.progress(p.Verified, p.Size, desc)
		},
	}
	if !rc.TrustAny {
		opt.Trust = trust.Check
	}
	opt.AllowDowngrade = rc.AllowDowngrade
	opt.Group = rc.Group
	if rc.Secret != "" {
		if opt.Secret, err = relay.LoadSecret(rc.Secret); err != nil {
			return failed("%s: secret: %v", c.Command.Name, err)
		}
	}
	opt.FaultAccuse, opt.FaultSilent = c.Bool("fault-accuse"), c.Bool("fault-silent")
	if bad := c.Int("fault-corrupt-chunk"); bad >= 0 {
		opt.CorruptChunk = func(i int) bool { return i == bad }
	}
	started := make(chan struct{}, 1)
	var busy atomic.Bool
	opt.Busy = func(b bool) {
		busy.Store(b)
		state := discover.StateIdle
		if b {
			state = discover.StateBusy
			select {
			case started <- struct{}{}:
			default:
			}
		}
		annMu.Lock()
		defer annMu.Unlock()
		if ann != nil {
			ann.SetState(state)
		}
	}
	r, err := relay.NewReceiver(cfg.Relay, opt)
	if err != nil {
		return failed("%s: %v", cmd, err)
	}
	defer r.Close()
	a, err := discover.Announce(cfg.Discover, discover.Announcement{
		ID: id.String(), Name: rc.Name, Group: rc.Group, State: discover.StateIdle, Version: relay.Version, Port: r.Port(),
	}, log)
	if err != nil {
		if discover.IsNoInterface(err) {
			return usage("%s: announce: %v", cmd, err)
		}
		return failed("%s: announce: %v", cmd, err)
	}
	annMu.Lock()
	ann = a
	annMu.Unlock()
	defer a.Close()
	con.printf("treecast: %s (%s) waiting for a session on port %d; actions: %s\n", rc.Name, id.Short(), r.Port(), cfg.Install.Describe())

	ctx := c.Context
	if once {
		err := joinOnce(ctx, r, rc.Timeout, cfg.Relay.SeedTimeout, started, con)
		if sig, ok := stoppedBy(ctx); ok && err != nil {
			return &exitError{sig.code(), fmt.Errorf("join: interrupted by %s: run the same command again (with the same --dir, it resumes from the blocks verified so far)", sig.name())}
		}
		return err
	}
	for {
		res, err := r.Next(ctx)
		con.endProgress()
		if err != nil {
			if ctx.Err() != nil {
				why := "stopping"
				if sig, ok := stoppedBy(ctx); ok {
					why = sig.name() + " received: stopping"
				}
				if busy.Load() {
					why += "; the session under way keeps its verified blocks in " + rc.Dir + ", to resume when the agent is started again"
				}
				con.printf("treecast: serve: %s\n", why)
				return nil
			}
			return &exitError{exitFailed, err}
		}
		printResult(con, res)
	}
}

// joinOnce waits for one session; timeout only bounds the wait for it to start.
func joinOnce(ctx context.Context, r *relay.Receiver, timeout, seedTimeout time.Duration, started <-chan struct{}, con *console) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timedOut := make(chan struct{})
	if timeout > 0 {
		go func() {
			t := time.NewTimer(timeout)
			defer t.Stop()
			select {
			case <-t.C:
				close(timedOut)
				cancel()
			case <-started:
			case <-ctx.Done():
			}
		}()
	}
	res, err := r.Next(ctx)
	con.endProgress()
	select {
	case <-timedOut:
		return &exitError{exitNotFound, fmt.Errorf("join: no session started within %s", timeout)}
	default:
	}
	// A seed that went away may come back (or be restarted): wait for it a
	// while, and resume from the chunks held.
	for err == nil && errors.Is(res.Err, relay.ErrSeedLost) {
		printResult(con, res)
		con.printf("treecast: waiting %s for the seed to come back\n", seedTimeout)
		wctx, cancel := context.WithTimeout(ctx, seedTimeout)
		var again relay.Result
		again, err = r.Next(wctx)
		cancel()
		con.endProgress()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return &exitError{exitFailed, fmt.Errorf("join: the seed did not come back within %s; run join again with the same --dir to resume", seedTimeout)}
		}
		if err == nil {
			res = again
		}
	}
	if err != nil {
		return &exitError{exitFailed, fmt.Errorf("join: %w", err)}
	}
	printResult(con, res)
	if res.Err != nil {
		return &exitError{exitFailed, errors.New("join: the package was not applied")}
	}
	return nil
}

func printResult(con *console, res relay.Result) {
	if res.Err != nil {
		con.printf("treecast: %s: failed after %.1fs: %s\n", res.Package.Name, res.Duration.Seconds(), oneLine(res.Err.Error()))
		if errors.Is(res.Err, relay.ErrSeedLost) {
			con.printf("treecast: the verified chunks are kept; run the seed again to resume\n")
		}
		return
	}
	if res.Already {
		con.printf("treecast: %s: this session was applied here already (sha256 %s); nothing done\n", res.Package.Name, res.Package.SHA256[:16])
		return
	}
	if res.UpToDate {
		con.printf("treecast: %s: up to date: applied here already with the same actions (sha256 %s); nothing downloaded or run (seed --force applies it again)\n", res.Package.Name, res.Package.SHA256[:16])
		return
	}
	empty := ""
	if res.Empty > 0 {
		empty = fmt.Sprintf(", empty blocks %s (not sent)", relay.HumanBytes(res.Empty))
	}
	con.printf("treecast: %s: applied (%s, sha256 %s) in %.1fs; downloaded %s, resumed %s%s\n",
		res.Package.Name, relay.HumanBytes(res.Package.Size), res.Package.SHA256[:16], res.Duration.Seconds(), relay.HumanBytes(res.Received), relay.HumanBytes(res.Resumed), empty)
}

// checkStateDir refuses a state folder (--dir) with symlinked parts, and
// --to or --extract inside it: the folder is treecast's own, and what lands
// there could be removed with its spool files or overwrite its state.
func checkStateDir(dir string, ic install.Config, write string) error {
	if err := relay.CheckStateDir(dir); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	for _, t := range []struct{ flag, path string }{{"to", ic.To}, {"extract", ic.Extract}, {"write", write}} {
		if t.path == "" {
			continue
		}
		inside, err := relay.InStateDir(dir, t.path)
		if err != nil {
			return fmt.Errorf("--%s %s: %w", t.flag, t.path, err)
		}
		if inside {
			return fmt.Errorf("--%s %s is inside the state folder %s (--dir), which is treecast's own: what lands there could be removed with its spool or overwrite its state; give --%s a directory outside it, or --dir another folder", t.flag, t.path, dir, t.flag)
		}
	}
	return nil
}

// streamPackage is a receiver's stream, with --exec CMD --stdin: CMD fed
// the package as it arrives; nil otherwise.
func streamPackage(ic install.Config) func(context.Context, relay.Package, io.Reader) error {
	if !ic.Stdin {
		return nil
	}
	return func(ctx context.Context, p relay.Package, in io.Reader) error {
		return install.Stream(ctx, ic, p.Name, p.SHA256, in, p.Output)
	}
}

// actionsFingerprint is a short fingerprint of what a receiver does with a
// package: its --to, --extract and --write places (absolute), its --exec
// command and --stdin. The caps on extraction are left out: they decide
// whether an apply fails, not what it does. A package applied with the
// same fingerprint is up to date.
//
// A package written to a disk with --write is never up to date: the disk
// is the machine's own, and what was written there may have changed since
// (a classroom PC, reimaged because it was changed).
func actionsFingerprint(ic install.Config, write string) string {
	if write != "" {
		return ""
	}
	abs := func(p string) string {
		if p == "" {
			return ""
		}
		if a, err := filepath.Abs(p); err == nil {
			return a
		}
		return filepath.Clean(p)
	}
	h := sha256.New()
	for _, f := range []struct{ key, value string }{
		{"to", abs(ic.To)}, {"extract", abs(ic.Extract)}, {"write", abs(write)},
		{"exec", ic.Exec}, {"stdin", strconv.FormatBool(ic.Stdin)},
	} {
		// Length-prefixed, so no value can pass for another's.
		fmt.Fprintf(h, "%s %d %s\n", f.key, len(f.value), f.value)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// applyPackage is a receiver's apply: install's, with the flag that raises
// a cap an archive passed (a flag is its TOML key with hyphens). With
// --stdin, --exec ran on the stream already.
func applyPackage(ic install.Config) func(context.Context, relay.Package) error {
	if ic.Stdin {
		ic.Exec, ic.Stdin = "", false
	}
	return func(ctx context.Context, p relay.Package) error {
		if ic.To == "" && ic.Extract == "" && ic.Exec == "" {
			return nil // --write alone: the package is in place already
		}
		err := install.Apply(ctx, ic, install.Package{Path: p.Path, Name: p.Name, Size: p.Size, SHA256: p.SHA256, Checked: p.Checked, Output: p.Output})
		var le *install.LimitError
		if errors.As(err, &le) {
			return fmt.Errorf("%w (on the command line: --%s)", err, strings.ReplaceAll(le.Setting, "_", "-"))
		}
		return err
	}
}

// lockDir makes dir this process's own; a second receiver on it is refused.
func lockDir(dir string) (func(), error) {
	unlock, err := relay.LockStateDir(dir)
	if errors.Is(err, relay.ErrStateDirInUse) {
		return nil, fmt.Errorf("%s is in use by another treecast receiver: give this one its own --dir", dir)
	}
	return unlock, err
}

// --- peers, keygen, secret -----------------------------------------------

func peersCommand() *cli.Command {
	return &cli.Command{
		Name:  "peers",
		Usage: "list the receivers announcing themselves on the LAN",
		Flags: []cli.Flag{
			groupFlag("only receivers announcing this group `NAME`"),
			ifaceFlag,
			&cli.DurationFlag{Name: "wait", Value: 2 * time.Second, Usage: "listen for answers this long"},
			jsonFlag("the receivers found as one JSON document on stdout, {\"peers\": [...]}, even when none were; warnings stay on stderr"),
			configFlag,
		},
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 0); err != nil {
				return err
			}
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			fromFlag(cfg, c, "iface", "discover.iface", &cfg.Discover.Iface, ifaces(c))
			if err := cfg.checkDiscover("peers"); err != nil {
				return err
			}
			if c.Duration("wait") < 0 {
				return usage("peers: --wait %s: want 0s (one query round) or longer", c.Duration("wait"))
			}
			con := newConsole()
			found, err := discover.Browse(c.Context, cfg.Discover, discover.BrowseOptions{Group: c.String("group"), AnyGroup: c.String("group") == "", Wait: c.Duration("wait")}, newLogger(c, con))
			if err != nil && len(found) == 0 && discover.IsNoInterface(err) {
				return usage("peers: %v", err)
			}
			if c.Bool("json") {
				printPeersJSON(os.Stdout, found)
			}
			if err != nil && len(found) == 0 {
				return &exitError{exitNotFound, err}
			}
			if !c.Bool("json") {
				printPeers(os.Stdout, found)
			}
			for _, p := range found {
				if p.Conflicted() {
					con.printf("treecast: node id %s answers from %s and %s: %s\n", p.ID, p.Addr, p.Conflict, conflictHelp)
				}
			}
			if len(found) == 0 {
				return &exitError{exitNotFound, errors.New("no receivers found")}
			}
			return nil
		},
	}
}

// printPeers writes the table of `treecast peers`. A receiver whose node id
// answers from two addresses shows both, and CONFLICT for its state.
func printPeers(w io.Writer, found []discover.Peer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tID\tADDRESS\tGROUP\tSTATE")
	for _, p := range found {
		addr, state := p.Addr.String(), p.State
		if p.Conflicted() {
			addr, state = addr+","+p.Conflict.String(), "CONFLICT"
		}
		fmt.Fprintf(tw, "%s\t%.8s\t%s\t%s\t%s\n", p.Name, p.ID, addr, p.Group, state)
	}
	tw.Flush()
}

func secretCommand() *cli.Command {
	return &cli.Command{
		Name:  "secret",
		Usage: "create a fleet secret: give the same file to the seed and every receiver with --secret",
		Description: `With a fleet secret, a seed offers a session only to receivers that prove they
hold it, receivers take sessions and children only from hosts that prove it,
and every block travels encrypted (AES-256-GCM, a key per session). Without
one, the package travels in clear to every receiver that answers.
Copy the file to each machine readable by its owner only (chmod 600).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "write the secret to `PATH` (never overwritten); required"},
		},
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 0); err != nil {
				return err
			}
			if c.String("out") == "" {
				return usage("secret: say where to write it: treecast secret --out PATH; see treecast secret --help")
			}
			if err := relay.WriteSecret(c.String("out")); err != nil {
				return failed("secret: %v", err)
			}
			fmt.Printf("wrote %s\ncopy it to every machine of the fleet (chmod 600), then: treecast seed --secret %s ...; treecast serve --secret %s ...\n", c.String("out"), c.String("out"), c.String("out"))
			return nil
		},
	}
}

func keygenCommand() *cli.Command {
	return &cli.Command{
		Name:  "keygen",
		Usage: "create a seed key and print the fingerprint receivers trust",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "write the key to `PATH` and the public key to PATH.pub", Value: defaultKeyPath()},
		},
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 0); err != nil {
				return err
			}
			key, err := relay.GenerateKey(c.String("out"))
			if err != nil {
				return failed("keygen: %v", err)
			}
			fp := relay.Fingerprint(key.Public().(ed25519.PublicKey))
			fmt.Printf("wrote %s and %s.pub\nfingerprint %s\nreceivers: treecast join --trust %s ...\n", c.String("out"), c.String("out"), fp, fp)
			return nil
		},
	}
}
