// Command treecast puts a package on every machine of a LAN fleet by
// relaying it peer to peer along a binary tree.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

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
	maxRateFlag = &cli.StringFlag{Name: "max-rate", Usage: "send at most `RATE` to all children together (20mbit, 1.5gbit, 5MB/s, 2MiB/s), so the rest of the network stays usable; each child's flow is paced at an even share of it from the first byte (without a cap: of 97% of the link, where its rate can be read)", DefaultText: "no cap", EnvVars: []string{"TREECAST_MAX_RATE"}}
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

	given, err := givenPeers(sc.Peers, sc.PeersFile)
	if err != nil {
		return usage("seed: %v", err)
	}
	expect := sc.Expect
	if expect > 0 {
		expect = max(expect-len(given), 0)
	}

	// From here on, every outcome is printed and written to the report.
	ctx := c.Context
	end := &seedEnd{ctx: ctx, con: con, out: os.Stdout, report: sc.Report, reportName: cfg.name("seed.report"), expect: sc.Expect, start: time.Now()}
	if c.Bool("json") {
		end.out, end.json = con, os.Stdout
	}
	// The package is hashed while receivers are looked for: a session
	// starts after the longer of the two, not after both.
	con.printf("treecast: looking for receivers (%s)\n", lookingFor(sc, cfg.Discover))
	bctx, stopBrowse := context.WithCancel(ctx)
	defer stopBrowse()
	hctx, stopHash := context.WithCancel(ctx)
	defer stopHash()
	browsed := make(chan browseResult, 1)
	go func() {
		var r browseResult
		if sc.Expect == 0 || expect > 0 {
			r.found, r.err = discover.Browse(bctx, cfg.Discover, discover.BrowseOptions{
				Group: sc.Group, Expect: expect, Wait: sc.Wait,
				OnPeer: func(p discover.Peer) {
					log.Info("found receiver", "name", p.Name, "addr", p.Addr, "state", p.State)
				},
			}, log)
		}
		if discover.IsNoInterface(r.err) && len(given) == 0 {
			stopHash() // a setting to fix: say so now, not after the hashing
		}
		browsed <- r
	}()
	hashes := relay.HashCache{Dir: hashCacheDir()}
	m, cached, err := hashes.Build(hctx, path, chunk, cfg.Relay.SessionTTL, func(done int64) {
		if st.Size() > 256<<20 {
			con.progress(done, st.Size(), "hashing "+st.Name())
		}
	})
	con.endProgress()
	if cached {
		log.Info("hashes from the cache: the file is unchanged since it was hashed", "package", st.Name(), "cache", hashes.Dir)
	}
	if err != nil {
		stopBrowse()
		br := <-browsed
		if ctx.Err() == nil && discover.IsNoInterface(br.err) && len(given) == 0 {
			return usage("seed: %v", br.err)
		}
		return end.finish(end.emptyReport(relay.ReportPackage{Name: st.Name(), Size: st.Size()}), failed("seed: %v", err))
	}
	nothingSent := func() *relay.Report {
		return end.emptyReport(relay.ReportPackage{Name: m.Name, Size: m.Size, SHA256: m.SumHex()})
	}
	// Busy receivers are waited for as long as --wait from the end of
	// the hashing, however long that took.
	waitEnds := time.Now().Add(sc.Wait)
	br := <-browsed
	found, err := br.found, br.err
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
		Secret:     secret,
		Compress:   sc.Compress == "on",
		Signed:     signed,
		Path:       path,
		Peers:      peers,
		Late:       late,
		WaitBusy:   waitEnds,
		RejoinWait: rejoinWait,
		Log:        log,
		Progress:   con.seedProgress,
	})
	stopWatch()
	<-watched
	con.endProgress()
	if errors.Is(err, relay.ErrSourceChanged) {
		hashes.Forget(path) // the next seed hashes it afresh
	}
	if rep == nil {
		rep = nothingSent()
	}
	if err != nil {
		err = failed("seed: %v", err)
	}
	return end.finish(rep, err)
}

// hashCacheDir is where the seed keeps the hashes of large files it sent
// (see relay.HashCache), or "" where the platform names no cache folder.
func hashCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "treecast", "hashes")
}

// browseResult is what looking for receivers found.
type browseResult struct {
	found []discover.Peer
	err   error
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
	// seen is where each node id last answered, and when: a browse flags
	// a node id that answers from two addresses, and the watch browses
	// one round at a time, so an id that answered from another address
	// within conflictWindow is flagged here as it would be in one browse.
	seen map[string]sighting
	now  func() time.Time
}

// sighting is where a node id answered, and when.
type sighting struct {
	addr netip.AddrPort
	at   time.Time
}

// conflictWindow: four of discover's rounds, as one browse of the watch
// was; a twin whose answer to one query was lost still meets its sibling.
const conflictWindow = 2 * time.Second

func newAdmission(group string, log *slog.Logger) *admission {
	return &admission{group: group, log: log, warned: make(map[discover.Peer]bool), seen: make(map[string]sighting), now: time.Now}
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
	if !p.Conflicted() {
		now := a.now()
		// At another port of the same address it is one machine whose
		// receiver restarted, as a browse judges it.
		if last, ok := a.seen[p.ID]; ok && last.addr.Addr() != p.Addr.Addr() && now.Sub(last.at) < conflictWindow {
			p.Conflict = last.addr
		}
		if len(a.seen) >= maxWarned {
			clear(a.seen)
		}
		a.seen[p.ID] = sighting{addr: p.Addr, at: now}
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

// rejoinWait is how long a seed waits for a lost receiver before it ends
// the session without it: long enough for a receiver killed and run again
// (or restarted by its service manager) to listen, answer a query and be
// dialled, with some queries lost on the way.
const rejoinWait = 6 * time.Second

// watchPeers keeps browsing while a session runs and hands every receiver
// admit lets in to the session, which attaches new ones and lets lost ones
// rejoin. Each browse is one round (discover's round, 500 ms by default),
// so a receiver that appears mid-session is dialled within a round of its
// first answer. Browses of four rounds handed their peers over after the
// fourth (2 s): in faults.sh's late fault (2 of 16 receivers started a third
// of the way in) every node was done 1.14-1.18 x the fault-free time, now
// 0.91-0.97 x (four runs each).
func watchPeers(ctx context.Context, dc discover.Config, group string, admit *admission, late chan<- relay.Peer, log *slog.Logger) {
	discover.Watch(ctx, dc, discover.BrowseOptions{Group: group}, func(found []discover.Peer) {
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
		&cli.DurationFlag{Name: "exec-timeout", Usage: "kill --exec's CMD, and all it started, if it still runs this `DURATION` after it had the whole package (with --stdin: after its stdin ended); the apply then fails; 0: no limit", DefaultText: "1h", EnvVars: []string{"TREECAST_EXEC_TIMEOUT"}},
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

// oneCore runs a receiver's Go code on one core unless GOMAXPROCS says
// otherwise (see oneCoreFor).
func oneCore(ic install.Config) {
	if oneCoreFor(os.Getenv("GOMAXPROCS"), ic) {
		runtime.GOMAXPROCS(1)
	}
}

// oneCoreFor says whether a receiver runs on one core, given the
// environment's GOMAXPROCS and its actions. A receiver moves blocks: it
// reads them, hashes them with the CPU's SHA extensions and writes them
// on, and one core does that for a receiver taking in 1 GiB and relaying
// half of it in 4.0-4.5 s (2 Gbit/s, unshaped links on 2 cores; 4.1-4.8 s
// with every core). More threads only wake each other: 64 receivers at 10
// Mbit/s spent 8.1-8.5 CPU-seconds on one core each against 9.5-9.6, and
// the machine's own work keeps the other cores. One that unpacks
// archives itself (--extract) keeps every core: unpacking would share one
// with relaying to its children.
func oneCoreFor(gomaxprocs string, ic install.Config) bool {
	return gomaxprocs == "" && ic.Extract == ""
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
	fromFlag(cfg, c, "exec-timeout", "install.exec_timeout", &cfg.Install.ExecTimeout, c.Duration)
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
	oneCore(cfg.Install)
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
	res, err := r.Join(ctx, func(res relay.Result) {
		con.endProgress()
		printResult(con, res)
		con.printf("treecast: waiting %s for the seed to come back\n", seedTimeout)
	})
	con.endProgress()
	select {
	case <-timedOut:
		return &exitError{exitNotFound, fmt.Errorf("join: no session started within %s", timeout)}
	default:
	}
	if errors.Is(err, relay.ErrSeedGone) {
		return &exitError{exitFailed, fmt.Errorf("join: %w; run join again with the same --dir to resume", err)}
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

// --- command line: exit codes, usage errors, flags after arguments --------

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
// with a stopSignal as its cause. A second signal, sameSignal or more
// later, has its default effect, ending treecast at once if stopping
// hangs. stop releases the signals.
func signalContext(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case s := <-ch:
			cancel(stopSignal{s.(syscall.Signal)})
		case <-done:
			return
		}
		t := time.NewTimer(sameSignal)
		defer t.Stop()
		for {
			select {
			case <-ch: // the same stop, sent twice
			case <-t.C:
				signal.Stop(ch)
				return
			case <-done:
				return
			}
		}
	})
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		wg.Wait()
		cancel(nil)
	}
}

// sameSignal: signals this close after the first are the same stop, sent
// twice: timeout(1) sends its signal to the command and again to its
// process group, and a terminal's Ctrl-C reaches every process of the
// foreground group at once.
const sameSignal = 500 * time.Millisecond

// stoppedBy reports the signal that ended ctx, if one did.
func stoppedBy(ctx context.Context) (stopSignal, bool) {
	var s stopSignal
	ok := errors.As(context.Cause(ctx), &s)
	return s, ok
}

// --- settings: config file, environment and flags -------------------------

// fileConfig is the TOML file; config.example.toml documents every key.
type fileConfig struct {
	Seed     seedConfig      `toml:"seed"`
	Receiver receiverConfig  `toml:"receiver"`
	Install  install.Config  `toml:"install"`
	Discover discover.Config `toml:"discover"`
	Relay    relay.Config    `toml:"relay"`
}

type seedConfig struct {
	Expect    int           `toml:"expect"`
	Wait      time.Duration `toml:"wait"`
	Group     string        `toml:"group"`
	ChunkSize string        `toml:"chunk_size"`
	Key       string        `toml:"key"`
	Secret    string        `toml:"secret"`
	Compress  string        `toml:"compress"`
	Report    string        `toml:"report"`
	Peers     []string      `toml:"peers"`      // receivers by address, HOST:PORT
	PeersFile string        `toml:"peers_file"` // a file of them, one a line
}

type receiverConfig struct {
	Name     string        `toml:"name"`
	Group    string        `toml:"group"`
	Dir      string        `toml:"dir"`
	Timeout  time.Duration `toml:"timeout"`
	Trust    []string      `toml:"trust"`
	TrustAny bool          `toml:"trust_any"`
	// AllowDowngrade accepts a session older than the last one applied
	// here from the same seed key for the same group.
	AllowDowngrade bool   `toml:"allow_downgrade"`
	Secret         string `toml:"secret"`
	Write          string `toml:"write"`
}

func defaultConfig() fileConfig {
	return fileConfig{
		Seed: seedConfig{
			Wait:      10 * time.Second, // long enough for a whole LAN to answer a few query rounds
			ChunkSize: "1MiB",           // small enough to pipeline, large enough that headers cost nothing
			Compress:  "on",             // text, binaries and disk images shrink; what does not is found cheaply
			Peers:     []string{},       // mDNS finds them
		},
		Receiver: receiverConfig{Trust: []string{}}, // trust nobody until told
		Install:  install.DefaultConfig(),
		Discover: discover.DefaultConfig(),
		Relay:    relay.DefaultConfig(),
	}
}

// settings is one command's configuration and where each value came from,
// so that a bad value is named as the person set it: by its flag, or by its
// key in the --config file.
type settings struct {
	fileConfig
	path  string            // the --config file; "" for none
	md    toml.MetaData     // the keys the file sets
	flags map[string]string // key ("relay.listen") -> the flag that set it
}

// loadConfig reads the --config file over the defaults, strictly: unknown
// keys and syntax errors name the key or line. Values are checked by
// settings.check, once the flags are in.
func loadConfig(c *cli.Context) (*settings, error) {
	s := &settings{fileConfig: defaultConfig(), path: c.String("config"), flags: map[string]string{}}
	if s.path == "" {
		return s, nil
	}
	md, err := toml.DecodeFile(s.path, &s.fileConfig)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, usage("config %s: %s", s.path, pe.ErrorWithPosition())
		}
		return nil, usage("config %s: %v", s.path, err)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		var names []string
		for _, k := range keys {
			names = append(names, k.String())
		}
		return nil, usage("config %s: unknown key %s (see config.example.toml for every key)", s.path, strings.Join(names, ", "))
	}
	s.md = md
	return s, nil
}

// fromFlag sets *dst, the setting key, to the value of flag when the flag or
// its TREECAST_* variable is set: flags win over the file.
func fromFlag[T any](s *settings, c *cli.Context, flag, key string, dst *T, get func(name string) T) {
	if c.IsSet(flag) {
		*dst = get(flag)
		s.flags[key] = flag
	}
}

// name is what the person knows setting key ("relay.dead_after") as: its
// flag when one set it, else its place in the file, "[relay] dead_after".
func (s *settings) name(key string) string {
	if f, ok := s.flags[key]; ok {
		return "--" + f
	}
	section, k, _ := strings.Cut(key, ".")
	return fmt.Sprintf("[%s] %s", section, k)
}

// invalid is the usage error of cmd for setting key, which holds value and
// accepts want. refs maps the words of want that name other settings (a
// package's field names) to their keys.
func (s *settings) invalid(cmd, key string, value any, want string, refs map[string]string) error {
	for word, ref := range refs {
		want = strings.ReplaceAll(want, word, s.name(ref))
	}
	if f, ok := s.flags[key]; ok {
		v := fmt.Sprint(value)
		if str, ok := value.(string); ok {
			v = strconv.Quote(str)
		}
		return usage("%s: --%s %s: want %s", cmd, f, v, want)
	}
	section, k, _ := strings.Cut(key, ".")
	v := fmt.Sprint(value)
	switch value := value.(type) {
	case string:
		v = strconv.Quote(value)
	case time.Duration:
		v = strconv.Quote(value.String())
	}
	setting := fmt.Sprintf("%s = %s", s.name(key), v)
	if s.path == "" {
		return usage("%s: %s: want %s", cmd, setting, want)
	}
	if !s.md.IsDefined(section, k) {
		setting += " (the default)"
	}
	return usage("%s: config %s: %s: want %s", cmd, s.path, setting, want)
}

// fieldError is invalid for the field of a package's Config, whose TOML
// section is section; refs are other fields of it.
func (s *settings) fieldError(cmd, section string, cfg any, field string, value any, want string, refs []string) error {
	t := reflect.TypeOf(cfg)
	key := func(field string) string {
		f, ok := t.FieldByName(field)
		if !ok {
			return section + "." + field
		}
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		return section + "." + tag
	}
	named := map[string]string{}
	for _, r := range refs {
		named[r] = key(r)
	}
	return s.invalid(cmd, key(field), value, want, named)
}

// The checks of each section of the file, with the flags in: a value out of
// range is a usage error of cmd naming the flag or key that set it. A
// command runs the checks of the sections it uses.

func (s *settings) checkRelay(cmd string) error {
	err := s.Relay.Validate()
	if ce := (*relay.ConfigError)(nil); errors.As(err, &ce) {
		return s.fieldError(cmd, "relay", s.Relay, ce.Field, ce.Value, ce.Want, ce.Refs)
	}
	return err
}

func (s *settings) checkDiscover(cmd string) error {
	err := s.Discover.Validate()
	if ce := (*discover.ConfigError)(nil); errors.As(err, &ce) {
		return s.fieldError(cmd, "discover", s.Discover, ce.Field, ce.Value, ce.Want, nil)
	}
	return err
}

func (s *settings) checkReceiver(cmd string) error {
	if s.Receiver.Timeout < 0 {
		return s.invalid(cmd, "receiver.timeout", s.Receiver.Timeout, "0s (wait forever) or longer", nil)
	}
	return nil
}

func (s *settings) checkSeed(cmd string) error {
	sc := &s.Seed
	if sc.Expect < 0 || sc.Expect > s.Relay.MaxNodes {
		return s.invalid(cmd, "seed.expect", sc.Expect, fmt.Sprintf("0 (start with the receivers found within wait) or more receivers, up to MaxNodes (%d), the most one session takes", s.Relay.MaxNodes),
			map[string]string{"MaxNodes": "relay.max_nodes"})
	}
	if sc.Wait < 0 {
		return s.invalid(cmd, "seed.wait", sc.Wait, "0s (one query round) or longer", nil)
	}
	if _, err := chunkSize(sc.ChunkSize); err != nil {
		return s.invalid(cmd, "seed.chunk_size", sc.ChunkSize, err.Error(), nil)
	}
	if sc.Compress != "on" && sc.Compress != "off" {
		return s.invalid(cmd, "seed.compress", sc.Compress, `"on" (blocks that shrink travel compressed) or "off"`, nil)
	}
	return nil
}

// chunkSize parses a chunk size; its error says the sizes it accepts.
func chunkSize(v string) (int, error) {
	const want = "a size from 4KiB to 16MiB, a multiple of 4KiB, such as 1MiB or 256KiB"
	n, err := parseSize(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s; sizes are %s", want, sizeForms)
	case n < relay.MinChunkSize || n > relay.MaxChunkSize || n%relay.MinBlockSize != 0:
		return 0, fmt.Errorf("%s (%s is %d bytes)", want, strings.TrimSpace(v), n)
	}
	return int(n), nil
}

func (s *settings) checkInstall(cmd string) error {
	err := s.Install.Validate()
	var ce *install.ConfigError
	switch {
	case s.Receiver.Write != "" && (s.Install.To != "" || s.Install.Extract != ""):
		return usage("%s: %s writes the package straight to %s and keeps no file of it, so there is nothing for %s to place or unpack: give one or the other (--exec may run after --write, with TREECAST_FILE the target)",
			cmd, s.name("receiver.write"), s.Receiver.Write, map[bool]string{true: s.name("install.to"), false: s.name("install.extract")}[s.Install.To != ""])
	case errors.Is(err, install.ErrNothingToApply) && s.Receiver.Write != "":
		return nil
	case errors.Is(err, install.ErrNothingToApply):
		return usage("%s: nothing to apply: give --to DIR, --extract DIR, --exec CMD or --write TARGET (or [install] to, extract or exec, [receiver] write in the --config file)", cmd)
	case errors.As(err, &ce):
		return s.fieldError(cmd, "install", s.Install, ce.Field, ce.Value, ce.Want, nil)
	}
	return err
}

// --- checks before anything is sent ---------------------------------------

// Checks of the places a command will write, made before anything is sent:
// a mistake found after the whole transfer costs the whole transfer. Each
// is a usage error (exit 2) naming the flag or key that set the place.

// checkTargets refuses a --to or --extract directory that cannot be
// created or written, is a file, or is in a kernel filesystem (/proc, /sys).
func (s *settings) checkTargets(cmd string) error {
	for _, t := range []struct{ key, path string }{{"install.to", s.Install.To}, {"install.extract", s.Install.Extract}} {
		if t.path == "" {
			continue
		}
		if err := install.WritableDir(t.path); err != nil {
			return usage("%s: %s %s: %v", cmd, s.name(t.key), t.path, err)
		}
	}
	return nil
}

// checkReport refuses a --report path whose folder is missing or not
// writable, or that is a directory: the report is written at the end, in
// every outcome, and must not fail then.
func (s *settings) checkReport(cmd string) error {
	path := s.Seed.Report
	if path == "" {
		return nil
	}
	name := s.name("seed.report")
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return usage("%s: %s %s is a directory: give the path of the JSON file to write, such as %s", cmd, name, path, filepath.Join(path, "report.json"))
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usage("%s: %s %s: the folder %s does not exist: create it (mkdir -p %s) or give another path", cmd, name, path, dir, dir)
	case err != nil:
		return usage("%s: %s %s: %v", cmd, name, path, err)
	case !st.IsDir():
		return usage("%s: %s %s: %s is a file, not a folder: give another path", cmd, name, path, dir)
	}
	if err := install.WritableDir(dir); err != nil {
		return usage("%s: %s %s: %v", cmd, name, path, err)
	}
	return nil
}

// seedKey loads the seed key. An explicit one (--key, TREECAST_KEY,
// [seed] key) must exist: a new key there would be one no receiver
// trusts. Only the default key is created on first use.
func (s *settings) seedKey(cmd string) (key ed25519.PrivateKey, path string, created bool, err error) {
	if s.Seed.Key == "" {
		path = defaultKeyPath()
		key, created, err = relay.LoadOrCreateKey(path)
		if err != nil {
			return nil, path, false, failed("%s: key: %v", cmd, err)
		}
		return key, path, created, nil
	}
	path = s.Seed.Key
	key, err = relay.LoadKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, path, false, usage("%s: %s %s: no such key file, and a new key there would be one no receiver trusts: give the path of your seed key, make one with `treecast keygen --out %s` (then receivers --trust it), or leave %s out to sign with the default key %s",
			cmd, s.name("seed.key"), path, path, s.name("seed.key"), defaultKeyPath())
	}
	if err != nil {
		return nil, path, false, failed("%s: key: %v", cmd, err)
	}
	return key, path, false, nil
}

// --- receivers given by address, interfaces -------------------------------

// givenPeers reads the receivers a seed is given by address (--peer, and
// --peers FILE: one HOST:PORT a line, # starts a comment), for fleets that
// mDNS does not reach: another subnet, or a switch that drops multicast.
// A receiver's node id and name come from its answer when the seed
// connects; one also found by mDNS is taken once.
func givenPeers(addrs []string, file string) ([]relay.Peer, error) {
	all := append([]string(nil), addrs...)
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--peers: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line, _, _ := strings.Cut(sc.Text(), "#")
			if line = strings.TrimSpace(line); line != "" {
				all = append(all, line)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--peers %s: %w", file, err)
		}
	}
	var peers []relay.Peer
	seen := map[netip.AddrPort]bool{}
	for _, a := range all {
		host, port, err := net.SplitHostPort(a)
		if err != nil || port == "0" {
			return nil, fmt.Errorf("peer %q: want HOST:PORT, the address and port a receiver listens on (join or serve --listen :PORT)", a)
		}
		ta, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("peer %q: %v", a, err)
		}
		ap := ta.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if seen[ap] {
			continue
		}
		seen[ap] = true
		peers = append(peers, relay.Peer{Name: host, Addr: ap})
	}
	return peers, nil
}

// withGiven adds the given receivers to those mDNS found, once each.
func withGiven(found []relay.Peer, given []relay.Peer) []relay.Peer {
	have := map[netip.AddrPort]bool{}
	for _, p := range found {
		have[p.Addr] = true
	}
	for _, p := range given {
		if !have[p.Addr] {
			found = append(found, p)
		}
	}
	return found
}

// ifaces reads --iface, repeatable and comma-separated, as discover's one
// comma-separated list.
func ifaces(c *cli.Context) func(string) string {
	return func(name string) string { return strings.Join(c.StringSlice(name), ",") }
}

// --- output: console, progress, log lines ---------------------------------

// What treecast writes for people: stderr is the console's, where log
// lines and the progress take turns, every line starting "treecast: ".
// For scripts, --json: one JSON document on stdout, and the people's text
// on stderr. (The seed's table and report are in report.go.)

// console owns stderr: the progress bar and log lines take turns on it.
type console struct {
	mu    sync.Mutex
	out   io.Writer
	tty   bool
	width func() int       // the terminal's columns, 0 if unknown; nil: unknown
	now   func() time.Time // nil: time.Now
	bar   *progressbar.ProgressBar
	rate  rateMeter
	last  time.Time // when the last plain progress line was written
	full  bool      // the line saying it is all there was written
}

func newConsole() *console {
	fd := int(os.Stderr.Fd())
	return &console{out: os.Stderr, tty: term.IsTerminal(fd), width: func() int {
		w, _, _ := term.GetSize(fd)
		return w
	}}
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bar != nil {
		c.bar.Clear()
	}
	n, err := c.out.Write(p)
	if c.bar != nil {
		c.bar.RenderBlank()
	}
	return n, err
}

func (c *console) printf(format string, a ...any) { fmt.Fprintf(c, format, a...) }

func (c *console) time() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// Progress off a terminal: a plain line this often (and one when all is
// there), so a log file shows the pace without a line per heartbeat.
const plainEvery = 3 * time.Second

// progressView is one progress update.
type progressView struct {
	done, total int64  // bytes of the package: the bar and the percentage
	moved       int64  // bytes moved so far, whose rate is shown
	left        int64  // bytes still to move, for the ETA
	what        string // what done and total are, e.g. "6.9 MiB of 15.3 MiB"
	rateOf      string // whose rate it is, after it: "" or " in all"
	desc        string // what is going on, last
}

// progress shows a receiver's (or the hashing's) done of total bytes.
func (c *console) progress(done, total int64, desc string) {
	c.show(progressView{done: done, total: total, moved: done, left: total - done,
		what: relay.HumanBytes(done) + " of " + relay.HumanBytes(total), desc: desc})
}

// seedProgress shows the session at the seed: the bytes of the package an
// average node holds, how many nodes are done, and the rate at which bytes
// reach the fleet in all.
func (c *console) seedProgress(p relay.SeedProgress) {
	if p.Nodes == 0 {
		return
	}
	size := p.Total / int64(p.Nodes)
	avg := p.Verified / int64(p.Nodes)
	desc := fmt.Sprintf("%d of %d nodes done", p.Done, p.Nodes)
	if p.Failed > 0 {
		desc += fmt.Sprintf(", %d failed", p.Failed)
	}
	if p.Busy > 0 {
		desc += fmt.Sprintf(", %d busy", p.Busy)
	}
	c.show(progressView{done: avg, total: size, moved: p.Verified, left: p.Total - p.Verified, rateOf: " in all",
		what: relay.HumanBytes(avg) + " of " + relay.HumanBytes(size) + " per node on average", desc: desc})
}

// text is the line of v after its percentage: what, the rate and the ETA
// once the meter has them, and desc.
func (v progressView) text(rate float64, known bool) string {
	parts := []string{v.what}
	if known {
		parts = append(parts, relay.HumanBytes(int64(rate))+"/s"+v.rateOf)
		if rate > 0 && v.left > 0 {
			parts = append(parts, "ETA "+(time.Duration(float64(v.left)/rate*float64(time.Second))).Round(time.Second).String())
		}
	}
	if v.desc != "" {
		parts = append(parts, v.desc)
	}
	return strings.Join(parts, ", ")
}

// show draws v: a bar on a terminal, otherwise a plain line every
// plainEvery and one when all is there.
func (c *console) show(v progressView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.time()
	c.rate.add(now, v.moved)
	rate, known := c.rate.rate(now)
	if !c.tty {
		complete := v.done >= v.total
		if complete && c.full || !complete && !c.last.IsZero() && now.Sub(c.last) < plainEvery {
			return
		}
		c.last, c.full = now, complete
		pct := 100.0
		if v.total > 0 {
			pct = float64(v.done) * 100 / float64(v.total)
		}
		fmt.Fprintf(c.out, "treecast: %5.1f%%  %s\n", pct, v.text(rate, known))
		return
	}
	if v.total == 0 {
		return // a bar of 0 bytes errors
	}
	if c.bar == nil {
		c.bar = progressbar.NewOptions64(v.total,
			progressbar.OptionSetWriter(c.out),
			progressbar.OptionSetWidth(barWidth),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
	}
	desc := v.text(rate, known)
	if c.width != nil {
		if w := c.width(); w > 0 {
			desc = cut(desc, w-barWidth-10) // " 100% |", "| " and a space: a longer line wraps and garbles the bar
		}
	}
	c.bar.Describe(desc)
	c.bar.Set64(v.done)
}

// barWidth is the progress bar's own width: the line's words need the rest.
const barWidth = 25

// endProgress removes the bar so the summary prints on a clean line, and
// starts the next progress afresh.
func (c *console) endProgress() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rate, c.last, c.full = rateMeter{}, time.Time{}, false
	if c.bar != nil {
		c.bar.Finish()
		fmt.Fprintln(c.out)
		c.bar = nil
	}
}

// The rate shown is that of the last rateWindow, and none until samples
// span minRateSpan: a rate from one sample would be 0 B/s, and one from a
// fraction of a second jumps about.
const (
	rateWindow  = 5 * time.Second
	minRateSpan = time.Second
)

// rateMeter turns a growing count of bytes into a rate.
type rateMeter struct {
	samples []rateSample // oldest first
}

type rateSample struct {
	at    time.Time
	bytes int64
}

func (m *rateMeter) add(at time.Time, bytes int64) {
	if n := len(m.samples); n > 0 && bytes < m.samples[n-1].bytes {
		m.samples = m.samples[:0] // fewer than before (a node gone): start again
	}
	m.samples = append(m.samples, rateSample{at, bytes})
	// Keep one sample at or before the window's start, so it is covered whole.
	i := 0
	for i+1 < len(m.samples) && !m.samples[i+1].at.After(at.Add(-rateWindow)) {
		i++
	}
	m.samples = m.samples[i:]
}

// rate is the bytes per second over the window, and whether the samples
// span enough time to say.
func (m *rateMeter) rate(now time.Time) (float64, bool) {
	if len(m.samples) < 2 {
		return 0, false
	}
	first, last := m.samples[0], m.samples[len(m.samples)-1]
	span := last.at.Sub(first.at)
	if span < minRateSpan {
		return 0, false
	}
	return float64(last.bytes-first.bytes) / span.Seconds(), true
}

// newLogger writes log lines through the console, so they never tear a
// live progress bar: warnings and errors always, the steps with --verbose.
func newLogger(c *cli.Context, con *console) *slog.Logger {
	return slog.New(&lineHandler{w: con, verbose: c.Bool("verbose")})
}

// logValueWidth cuts what a log line says of one attribute (an error with
// a command's output, say) unless --verbose: the report has it whole.
const logValueWidth = 240

// lineHandler writes a log record as one line in treecast's own style:
//
//	treecast: warning: node lost: h3 (0123abcd): read tcp ...: connection reset
//
// the level ("warning: ", "error: ", "debug: "; none for info), the
// message, then the attributes: what the line is about (node, name,
// package) by value alone, others as "key value", and the error or reason
// last. Every value is flattened to one line.
type lineHandler struct {
	w       io.Writer
	verbose bool
	group   string      // prefix of the keys of attrs added after WithGroup
	attrs   []slog.Attr // from WithAttrs, keys prefixed
}

// Keys whose value the line shows alone, and keys that say why.
var (
	subjectKeys = map[string]bool{"node": true, "name": true, "package": true}
	reasonKeys  = map[string]bool{"err": true, "reason": true, "detail": true}
)

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.verbose || l >= slog.LevelWarn
}

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("treecast: ")
	switch {
	case r.Level >= slog.LevelError:
		b.WriteString("error: ")
	case r.Level >= slog.LevelWarn:
		b.WriteString("warning: ")
	case r.Level < slog.LevelInfo:
		b.WriteString("debug: ")
	}
	b.WriteString(oneLine(r.Message))
	var about, why []string
	var add func(prefix string, a slog.Attr)
	add = func(prefix string, a slog.Attr) {
		v := a.Value.Resolve()
		if v.Kind() == slog.KindGroup {
			if a.Key != "" {
				prefix += a.Key + "."
			}
			for _, ga := range v.Group() {
				add(prefix, ga)
			}
			return
		}
		if a.Equal(slog.Attr{}) {
			return
		}
		text := oneLine(v.String())
		if !h.verbose {
			text = shorten(text, logValueWidth)
		}
		switch key := prefix + a.Key; {
		case reasonKeys[key]:
			why = append(why, text)
		case subjectKeys[key]:
			about = append(about, text)
		default:
			about = append(about, key+" "+text)
		}
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		add(h.group, a)
		return true
	})
	if len(about) > 0 {
		b.WriteString(": " + strings.Join(about, ", "))
	}
	for _, w := range why {
		b.WriteString(": " + w)
	}
	b.WriteByte('\n')
	_, err := io.WriteString(h.w, b.String()) // one write: one line, whole
	return err
}

func (h *lineHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range attrs {
		if h.group != "" {
			a = slog.Group(strings.TrimSuffix(h.group, "."), a)
		}
		h2.attrs = append(h2.attrs, a)
	}
	return &h2
}

func (h *lineHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group += name + "."
	return &h2
}

// oneLine flattens s for a line of its own or a table cell: its lines,
// trimmed, joined by " | ", every other control character (a tab, an
// escape a hostile name or a command's output may hold) a space.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var lines []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		l = strings.TrimSpace(strings.Map(func(r rune) rune {
			if unicode.IsControl(r) {
				return ' '
			}
			return r
		}, l))
		if l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " | ")
}

// shorten cuts s to at most width characters by taking out its middle,
// marked "…": an error says what was done first and what went wrong last
// (a command, then its exit status and stderr), and both are kept.
func shorten(s string, width int) string {
	if width < 3 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	head := width / 3
	tail := width - head - 1
	return strings.TrimRight(string(r[:head]), " ") + "…" + strings.TrimLeft(string(r[len(r)-tail:]), " ")
}

// cut shortens s to at most width characters, ending it with "…" if it
// was longer.
func cut(s string, width int) string {
	if width < 1 || utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return strings.TrimRight(string(r[:width-1]), " ") + "…"
}

func jsonFlag(usage string) *cli.BoolFlag {
	return &cli.BoolFlag{Name: "json", Usage: usage}
}

// peerJSON is a receiver in `treecast peers --json`.
type peerJSON struct {
	Name    string `json:"name"`
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Group   string `json:"group"`
	State   string `json:"state"` // "idle", "busy", or what a newer receiver announces
	Version int    `json:"version"`
	// Conflict is a second address that answered for the node id: two
	// machines claim it, and a seed sends to neither.
	Conflict string `json:"conflict,omitempty"`
}

// printPeersJSON writes the receivers found as one JSON document.
func printPeersJSON(w io.Writer, found []discover.Peer) error {
	doc := struct {
		Peers []peerJSON `json:"peers"`
	}{Peers: []peerJSON{}}
	for _, p := range found {
		pj := peerJSON{Name: p.Name, ID: p.ID, Addr: p.Addr.String(), Group: p.Group, State: p.State, Version: p.Version}
		if p.Conflicted() {
			pj.Conflict = p.Conflict.String()
		}
		doc.Peers = append(doc.Peers, pj)
	}
	b, err := jsonDoc(doc)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// jsonDoc is v as an indented JSON document and a newline, with <, > and &
// as they are: an error quoting a shell command stays readable.
func jsonDoc(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(v)
	return b.Bytes(), err
}

// --- the seed's report, table and summary ---------------------------------

// How a seed run ends, whatever ended it (every node done, no receivers,
// a failure, Ctrl-C): the table (on stdout, or on stderr with --json), the
// report (the --report file, and with --json on stdout), and the exit code.

// Outcomes of a seed run, in the report.
const (
	outcomeOK          = "ok"           // every node applied the package (or had it), and at least --expect were found
	outcomeFailed      = "failed"       // a node failed or was busy, fewer than --expect were found, or the seed failed
	outcomeNoReceivers = "no receivers" // nothing was sent
	outcomeInterrupted = "interrupted"  // stopped by SIGINT or SIGTERM
)

// seedReport is the --report file: relay's report, and how the run ended.
type seedReport struct {
	*relay.Report
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"` // why it did not end ok
}

// seedEnd ends one seed run.
type seedEnd struct {
	ctx        context.Context // the command's: a signal that ended it is its cause
	con        *console        // stderr
	out        io.Writer       // the table
	json       io.Writer       // --json: the report goes here too; nil: nowhere
	report     string          // --report path; "" writes none
	reportName string          // the flag or key that set it, for messages
	expect     int
	start      time.Time
}

// emptyReport is the report of a run that sent nothing: pkg is what it
// would have sent (its sha256 is empty if hashing did not end).
func (e *seedEnd) emptyReport(pkg relay.ReportPackage) *relay.Report {
	return &relay.Report{Package: pkg, Seconds: time.Since(e.start).Seconds()}
}

// finish prints rep, writes the report, and returns the run's exit error:
// runErr, what rep says (a failed node, fewer than --expect), or the
// signal that stopped the run. A report that cannot be written exits 4
// (unless a signal stopped the run), after the run's own verdict is said.
func (e *seedEnd) finish(rep *relay.Report, runErr error) error {
	rep.Expected = e.expect
	if rep.Nodes == nil {
		rep.Nodes = []relay.ReportNode{} // "nodes": [], not null
	}
	var verdict *exitError
	outcome := outcomeFailed
	// A run that ended of itself is not interrupted by a signal after it.
	sig, stopped := stoppedBy(e.ctx)
	stopped = stopped && runErr != nil
	switch {
	case stopped:
		outcome = outcomeInterrupted
		for i := range rep.Nodes {
			if n := &rep.Nodes[i]; n.Status != relay.StatusOK && n.Error == "" {
				n.Error = fmt.Sprintf("interrupted: the seed was stopped by %s when this node held %s of %s; run the seed again to resume",
					sig.name(), relay.HumanBytes(n.Bytes), relay.HumanBytes(rep.Package.Size))
			}
		}
		what := "the receivers keep the blocks they verified"
		if len(rep.Nodes) == 0 {
			what = "nothing was sent"
		}
		verdict = &exitError{sig.code(), fmt.Errorf("seed: interrupted: run the same command again to resume (stopped by %s; %s)", sig.name(), what)}
	case runErr != nil:
		if !errors.As(runErr, &verdict) {
			verdict = &exitError{exitFailed, runErr}
		}
		if verdict.code == exitNotFound {
			outcome = outcomeNoReceivers
		}
	case rep.Failed() > 0 || rep.Busy() > 0 || len(rep.Nodes) < e.expect:
		verdict = &exitError{exitFailed, errors.New(shortfall(rep))}
	default:
		outcome = outcomeOK
	}
	if len(rep.Nodes) > 0 && printReport(e.out, rep) {
		e.con.printf("treecast: errors are cut to %d characters in the table, a line per node; the report (--report PATH, or --json) has them whole\n", tableErrorWidth)
	}
	sr := seedReport{Report: rep, Outcome: outcome}
	if verdict != nil {
		sr.Error = verdict.Error()
	}
	doc, err := jsonDoc(sr)
	if err != nil {
		return fmt.Errorf("seed: the report: %w", err) // cannot be: it is plain data
	}
	if e.json != nil {
		e.json.Write(doc)
	}
	if e.report == "" {
		return errOrNil(verdict)
	}
	werr := writeReport(e.report, doc)
	if werr == nil {
		return errOrNil(verdict)
	}
	rerr := &exitError{exitReport, fmt.Errorf("seed: %s %s: %w: the outcome was not saved (the table above has it): make that path writable, or give another one", e.reportName, e.report, werr)}
	if stopped {
		e.con.printf("treecast: %v\n", rerr)
		return verdict
	}
	if verdict != nil {
		e.con.printf("treecast: %v\n", verdict)
	}
	return rerr
}

// errOrNil keeps a nil *exitError from becoming a non-nil error.
func errOrNil(e *exitError) error {
	if e == nil {
		return nil
	}
	return e
}

// tableErrorWidth is the most of a node's error the seed's table shows
// (its start and its end), so each node is one line; the report has the
// error whole.
const tableErrorWidth = 80

// tableNameWidth is where the table cuts a node's name, which the node
// chose itself.
const tableNameWidth = 32

// printReport writes the table of nodes, one line each, and the summary
// line. It reports whether it cut an error to fit its line.
func printReport(w io.Writer, rep *relay.Report) (cutErrors bool) {
	names := map[string]string{"seed": "seed"}
	for _, n := range rep.Nodes {
		names[n.ID] = cut(oneLine(n.Name), tableNameWidth)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tID\tADDRESS\tPARENTS\tSTATUS\tBYTES\tSECONDS\tERROR")
	for _, n := range rep.Nodes {
		var parents []string
		for _, p := range n.Parents {
			parents = append(parents, cmp.Or(names[p], "-"))
		}
		status := n.Status
		if n.Detail != "" {
			status += " (" + n.Detail + ")"
		}
		msg := oneLine(n.Error)
		if c := shorten(msg, tableErrorWidth); c != msg {
			msg, cutErrors = c, true
		}
		fmt.Fprintf(tw, "%s\t%.8s\t%s\t%s\t%s\t%d\t%.1f\t%s\n", names[n.ID], n.ID, oneLine(n.Addr), strings.Join(parents, ","), status, n.Bytes, n.Seconds, msg)
	}
	tw.Flush()
	fmt.Fprintln(w, summary(rep))
	return cutErrors
}

// summary is the line under the table: how many nodes have the package,
// how many had it already, were busy, failed or were not found, and the
// rate, if any node downloaded it.
func summary(rep *relay.Report) string {
	busy, failed, upToDate := rep.Busy(), rep.Failed(), rep.UpToDate()
	ok := len(rep.Nodes) - busy - failed
	line := fmt.Sprintf("%s: %d of %d nodes ok", rep.Package.Name, ok, len(rep.Nodes))
	if upToDate > 0 {
		line += fmt.Sprintf(" (%d up to date)", upToDate)
	}
	if busy > 0 {
		line += fmt.Sprintf(", %d busy with another session", busy)
	}
	line += fmt.Sprintf(", %d failed", failed)
	if rep.Expected > len(rep.Nodes) {
		line += fmt.Sprintf(", %d of %d expected not found", rep.Expected-len(rep.Nodes), rep.Expected)
	}
	if ok-upToDate == 0 {
		// No node applied it in this session: there is no rate to show.
		return line + fmt.Sprintf("; in %.1fs", rep.Seconds)
	}
	rate := 0.0
	if rep.Seconds > 0 {
		rate = float64(rep.Package.Size) / rep.Seconds
	}
	return line + fmt.Sprintf("; %s in %.1fs (%s/s per node)", relay.HumanBytes(rep.Package.Size), rep.Seconds, relay.HumanBytes(int64(rate)))
}

// shortfall says why rep is a failure (exit 1): the nodes that failed,
// and the receivers expected that were not found.
func shortfall(rep *relay.Report) string {
	var why []string
	if f := rep.Failed(); f > 0 {
		why = append(why, fmt.Sprintf("%d of %d nodes failed", f, len(rep.Nodes)))
	}
	if b := rep.Busy(); b > 0 {
		why = append(why, fmt.Sprintf("%d of %d nodes busy with another session (run the seed again once it is over, or with a --wait long enough for it)", b, len(rep.Nodes)))
	}
	if rep.Expected > len(rep.Nodes) {
		why = append(why, fmt.Sprintf("%d of %d expected were not found (found %d)", rep.Expected-len(rep.Nodes), rep.Expected, len(rep.Nodes)))
	}
	return strings.Join(why, "; ")
}

// writeReport replaces path atomically with the report doc; on failure it
// leaves no temporary file behind.
func writeReport(path string, doc []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(doc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// --- version --------------------------------------------------------------

// What a release build is, set by the linker (scripts/release.sh:
// -ldflags "-X main.version=v1.2.0 -X main.commit=... -X main.date=...").
// The linker can only set package variables; nothing else writes them.
var (
	version string // the release, e.g. v1.2.0
	commit  string // the full commit hash it was built from
	date    string // that commit's time, RFC 3339 in UTC
)

// buildInfo says which treecast this is.
type buildInfo struct {
	Version  string // "(devel)" when the build says nothing
	Commit   string
	Date     string
	Modified bool // built from a work tree with uncommitted changes
}

// currentBuild is what the linker set, completed from the version control
// data the go command embeds when it builds inside a repository.
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, Date: date}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b = b.completedFrom(bi)
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	return b
}

// completedFrom fills the fields b lacks from bi: the main module's version
// (a tag, or a pseudo-version such as v0.0.0-20261125101500-1a2b3c4d5e6f)
// and its vcs.revision, vcs.time and vcs.modified settings.
func (b buildInfo) completedFrom(bi *debug.BuildInfo) buildInfo {
	if b.Version == "" && bi.Main.Version != "(devel)" {
		b.Version = bi.Main.Version
	}
	fromVCS := b.Commit == ""
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision" && fromVCS:
			b.Commit = s.Value
		case s.Key == "vcs.time" && b.Date == "":
			b.Date = s.Value
		case s.Key == "vcs.modified" && fromVCS:
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// String names the build, e.g.
// "treecast v1.2.0 (commit 1a2b3c4d5e6f, 2026-11-25T10:15:00Z)".
func (b buildInfo) String() string {
	s := "treecast " + b.Version
	if b.Commit != "" {
		c := b.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += " (commit " + c
		if b.Modified {
			s += "+modified"
		}
		if b.Date != "" {
			s += ", " + b.Date
		}
		s += ")"
	}
	return s
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, the commit it was built from, and the protocol version",
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 0); err != nil {
				return err
			}
			printVersion(c.App.Writer, currentBuild())
			return nil
		},
	}
}

func printVersion(w io.Writer, b buildInfo) {
	fmt.Fprintf(w, "%s, protocol %d, %s %s/%s\n", b, relay.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// --- shell completion -----------------------------------------------------

// Shell completion scripts are generated from the command definitions, so
// they never drift from the flags the binary takes. Each shell gets a
// static script: urfave/cli's dynamic completion (EnableBashCompletion)
// offers hidden flags that are not booleans (the lab's fault injection),
// reads os.Args, and ships no bash or zsh script in its Go API.

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Hidden:    true,
		Usage:     "print the shell completion script for SHELL: bash, zsh or fish",
		ArgsUsage: "SHELL",
		Description: `Load it in the running shell, or install it where the shell looks:

   source <(treecast completion bash)     # or > /usr/share/bash-completion/completions/treecast
   source <(treecast completion zsh)      # or > a directory of $fpath, as _treecast
   treecast completion fish | source      # or > ~/.config/fish/completions/treecast.fish`,
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 1); err != nil {
				return err
			}
			gen, ok := completionScripts[c.Args().First()]
			if !ok {
				return usage("completion: name the shell: treecast completion bash|zsh|fish")
			}
			gen(c.App.Writer, completionSpecOf(c.App))
			return nil
		},
	}
}

// completionScripts writes the script of each shell.
var completionScripts = map[string]func(io.Writer, completionSpec){
	"bash": writeBashCompletion,
	"zsh":  writeZshCompletion,
	"fish": writeFishCompletion,
}

// completionSpec is what a completion script needs of the command line.
type completionSpec struct {
	name     string
	global   []completionFlag
	commands []completionCmd
}

type completionCmd struct {
	names []string // the name, then aliases
	usage string
	args  string // "FILE" when the arguments are files, else ""
	flags []completionFlag
}

type completionFlag struct {
	names    []string // long names first, as urfave/cli lists them
	usage    string   // without the backquotes that mark the placeholder
	value    string   // the placeholder, e.g. "DIR"; "" for a flag that takes none
	repeated bool
}

// Value kinds, by placeholder: what the shell offers for a flag's value.
func (f completionFlag) takesFile() bool {
	return f.value == "FILE" || f.value == "PATH" || f.value == "KEY"
}
func (f completionFlag) takesDir() bool { return f.value == "DIR" }

// dashed returns the flag's names as typed: --long, -s.
func (f completionFlag) dashed() []string {
	var out []string
	for _, n := range f.names {
		if len(n) == 1 {
			out = append(out, "-"+n)
		} else {
			out = append(out, "--"+n)
		}
	}
	return out
}

// completionSpecOf reads the visible commands and flags of app, which must
// be set up (it is, inside an action).
func completionSpecOf(app *cli.App) completionSpec {
	s := completionSpec{name: app.Name, global: completionFlags(app.VisibleFlags())}
	for _, c := range app.VisibleCommands() {
		cc := completionCmd{names: c.Names(), usage: c.Usage, flags: completionFlags(c.VisibleFlags())}
		if strings.Contains(c.ArgsUsage, "FILE") {
			cc.args = c.ArgsUsage
		}
		s.commands = append(s.commands, cc)
	}
	return s
}

// completionFlags lists flags, with --help (which urfave/cli adds to
// every command when it runs one) once.
func completionFlags(flags []cli.Flag) []completionFlag {
	out := []completionFlag{{names: []string{"help", "h"}, usage: "show help"}}
	for _, f := range flags {
		if slices.Contains(f.Names(), "help") {
			continue
		}
		df, ok := f.(cli.DocGenerationFlag)
		if !ok {
			continue
		}
		cf := completionFlag{names: f.Names(), usage: df.GetUsage()}
		if df.TakesValue() {
			cf.value = placeholder(cf.usage)
			if cf.value == "" {
				cf.value = "VALUE"
			}
		}
		if sf, ok := f.(cli.DocGenerationSliceFlag); ok {
			cf.repeated = sf.IsSliceFlag()
		}
		cf.usage = strings.ReplaceAll(cf.usage, "`", "")
		out = append(out, cf)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].names[0] < out[j].names[0] })
	return out
}

// placeholder returns the first `QUOTED` word of a flag's usage, which
// urfave/cli shows as the flag's value.
func placeholder(usage string) string {
	_, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return ""
	}
	word, _, ok := strings.Cut(rest, "`")
	if !ok {
		return ""
	}
	return word
}

// --- bash ---------------------------------------------------------------

func writeBashCompletion(w io.Writer, s completionSpec) {
	fn := "_" + s.name
	fmt.Fprintf(w, `# bash completion for %[1]s, generated by `+"`%[1]s completion bash`"+`.
# Load it now: source <(%[1]s completion bash)
# or install it: %[1]s completion bash > /usr/share/bash-completion/completions/%[1]s

%[2]s_words() { local IFS=$'\n'; COMPREPLY=($(compgen "$1" -- "$2")); compopt -o filenames 2>/dev/null; }

%[2]s() {
	local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd= i
	if [[ $prev == = && $COMP_CWORD -ge 2 ]]; then prev=${COMP_WORDS[COMP_CWORD-2]}; fi
	[[ $cur == = ]] && cur=
	for ((i = 1; i < COMP_CWORD; i++)); do
		case ${COMP_WORDS[i]} in
`, s.name, fn)
	if v := bashValueFlags(s.global); v != "" {
		fmt.Fprintf(w, "\t\t%s) ((i++)) ;;\n", v)
	}
	fmt.Fprintf(w, "\t\t-* | =) ;;\n\t\t*) cmd=${COMP_WORDS[i]}; break ;;\n\t\tesac\n\tdone\n\tcase $cmd in\n")
	var names []string
	for _, c := range s.commands {
		names = append(names, c.names...)
	}
	writeBashCase(w, fn, `""`, s.global, strings.Join(names, " "), "")
	for _, c := range s.commands {
		writeBashCase(w, fn, strings.Join(c.names, " | "), c.flags, "", c.args)
	}
	fmt.Fprintf(w, "\tesac\n}\n\ncomplete -F %s %s\n", fn, s.name)
}

// writeBashCase completes the flags of one command (or of none: words are
// then the command names), their values, and its arguments.
func writeBashCase(w io.Writer, fn, pattern string, flags []completionFlag, words, args string) {
	fmt.Fprintf(w, "\t%s)\n", pattern)
	var files, dirs, others, all []string
	for _, f := range flags {
		switch {
		case f.takesFile():
			files = append(files, f.dashed()...)
		case f.takesDir():
			dirs = append(dirs, f.dashed()...)
		case f.value != "":
			others = append(others, f.dashed()...)
		}
		all = append(all, f.dashed()...)
	}
	if len(files)+len(dirs)+len(others) > 0 {
		fmt.Fprintf(w, "\t\tcase $prev in\n")
		if len(files) > 0 {
			fmt.Fprintf(w, "\t\t%s) %s_words -f \"$cur\"; return ;;\n", strings.Join(files, " | "), fn)
		}
		if len(dirs) > 0 {
			fmt.Fprintf(w, "\t\t%s) %s_words -d \"$cur\"; return ;;\n", strings.Join(dirs, " | "), fn)
		}
		if len(others) > 0 {
			fmt.Fprintf(w, "\t\t%s) return ;;\n", strings.Join(others, " | "))
		}
		fmt.Fprintf(w, "\t\tesac\n")
	}
	fmt.Fprintf(w, "\t\tif [[ $cur == -* ]]; then\n\t\t\tCOMPREPLY=($(compgen -W '%s' -- \"$cur\"))\n", strings.Join(all, " "))
	switch {
	case words != "":
		fmt.Fprintf(w, "\t\telse\n\t\t\tCOMPREPLY=($(compgen -W '%s' -- \"$cur\"))\n", words)
	case args != "":
		fmt.Fprintf(w, "\t\telse\n\t\t\t%s_words -f \"$cur\"\n", fn)
	}
	fmt.Fprintf(w, "\t\tfi\n\t\t;;\n")
}

// bashValueFlags is a case pattern of every flag that takes a value, or "".
func bashValueFlags(flags []completionFlag) string {
	var out []string
	for _, f := range flags {
		if f.value != "" {
			out = append(out, f.dashed()...)
		}
	}
	return strings.Join(out, " | ")
}

// --- zsh ----------------------------------------------------------------

func writeZshCompletion(w io.Writer, s completionSpec) {
	fn := "_" + s.name
	fmt.Fprintf(w, `#compdef %[1]s
# zsh completion for %[1]s, generated by `+"`%[1]s completion zsh`"+`.
# Load it now: source <(%[1]s completion zsh)
# or install it as _%[1]s in a directory of $fpath, before compinit runs.

%[2]s_commands() {
	local -a commands
	commands=(
`, s.name, fn)
	for _, c := range s.commands {
		for _, n := range c.names {
			fmt.Fprintf(w, "\t\t%s\n", zshQuote(strings.ReplaceAll(n, ":", `\:`)+":"+c.usage))
		}
	}
	fmt.Fprintf(w, "\t)\n\t_describe -t commands '%s command' commands\n}\n\n", s.name)
	specs := append(zshFlagSpecs(s.global), zshQuote("1: :"+fn+"_commands"), zshQuote("*:: :->args"))
	fmt.Fprintf(w, "%s() {\n\tlocal curcontext=$curcontext state line\n\ttypeset -A opt_args\n", fn)
	fmt.Fprintf(w, "\t_arguments -C \\\n\t\t%s\n", strings.Join(specs, " \\\n\t\t"))
	fmt.Fprintf(w, "\t[[ $state == args ]] || return\n\tcurcontext=${curcontext%%:*:*}:%s-$words[1]:\n\tcase $words[1] in\n", s.name)
	for _, c := range s.commands {
		specs := zshFlagSpecs(c.flags)
		if c.args != "" {
			specs = append(specs, zshQuote("1:"+c.args+":_files"))
		}
		fmt.Fprintf(w, "\t%s)\n\t\t_arguments \\\n\t\t\t%s\n\t\t;;\n", strings.Join(c.names, " | "), strings.Join(specs, " \\\n\t\t\t"))
	}
	fmt.Fprintf(w, "\tesac\n}\n\nif [[ $funcstack[1] == %[1]s ]]; then\n\t%[1]s \"$@\"\nelse\n\tcompdef %[1]s %[2]s\nfi\n", fn, s.name)
}

// zshFlagSpecs returns an _arguments spec per flag name, e.g.
// '--to=[place ...]:DIR:_files -/'.
func zshFlagSpecs(flags []completionFlag) []string {
	var out []string
	for _, f := range flags {
		desc := strings.NewReplacer(`\`, `\\`, "[", `\[`, "]", `\]`).Replace(f.usage)
		action := ""
		if f.value != "" {
			action = ":" + f.value + ": "
			switch {
			case f.takesFile():
				action = ":" + f.value + ":_files"
			case f.takesDir():
				action = ":" + f.value + ":_files -/"
			}
		}
		for _, n := range f.dashed() {
			spec := n
			if f.value != "" {
				spec += "="
			}
			if f.repeated {
				spec = "*" + spec
			}
			out = append(out, zshQuote(spec+"["+desc+"]"+action))
		}
	}
	return out
}

// zshQuote quotes s as one word for zsh (and bash, and fish).
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// --- fish ---------------------------------------------------------------

func writeFishCompletion(w io.Writer, s completionSpec) {
	fmt.Fprintf(w, `# fish completion for %[1]s, generated by `+"`%[1]s completion fish`"+`.
# Load it now: %[1]s completion fish | source
# or install it: %[1]s completion fish > ~/.config/fish/completions/%[1]s.fish

function __fish_%[1]s_no_command
	set -l words (commandline -opc)
	set -e words[1]
	for w in $words
		string match -q -- '-*' $w; or return 1
	end
	return 0
end

complete -c %[1]s -f
`, s.name)
	top := "__fish_" + s.name + "_no_command"
	writeFishFlags(w, s.name, top, s.global)
	for _, c := range s.commands {
		for _, n := range c.names {
			fmt.Fprintf(w, "complete -c %s -n %s -a %s -d %s\n", s.name, top, fishQuote(n), fishQuote(c.usage))
		}
	}
	for _, c := range s.commands {
		cond := fishQuote("__fish_seen_subcommand_from " + strings.Join(c.names, " "))
		writeFishFlags(w, s.name, cond, c.flags)
		if c.args != "" {
			fmt.Fprintf(w, "complete -c %s -n %s -F\n", s.name, cond)
		}
	}
}

func writeFishFlags(w io.Writer, name, cond string, flags []completionFlag) {
	for _, f := range flags {
		line := "complete -c " + name + " -n " + cond
		for _, n := range f.names {
			if len(n) == 1 {
				line += " -s " + n
			} else {
				line += " -l " + n
			}
		}
		switch {
		case f.takesFile():
			line += " -r -F"
		case f.takesDir():
			line += " -x -a '(__fish_complete_directories)'"
		case f.value != "":
			line += " -x"
		}
		fmt.Fprintf(w, "%s -d %s\n", line, fishQuote(f.usage))
	}
}

// fishQuote quotes s as one word for fish, where a backslash escapes a
// quote inside single quotes.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}

// --- man page -------------------------------------------------------------

// manCommand prints the man page, made from the command definitions by
// urfave/cli (ToManWithSection).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Hidden: true,
		Usage:  "print the man page treecast(1) in roff: treecast man > /usr/local/share/man/man1/treecast.1",
		Action: func(c *cli.Context) error {
			if err := noStrayArgs(c, 0); err != nil {
				return err
			}
			page, err := manPage(c.App)
			if err != nil {
				return failed("man: %v", err)
			}
			fmt.Fprint(c.App.Writer, page)
			return nil
		},
	}
}

// manPage renders app as treecast(1). urfave/cli writes Markdown and turns
// it into roff, so the texts written for --help are escaped on a copy
// first; each command's description, without the exit codes it repeats,
// goes in as its usage text, and the exit codes once, after the
// description.
func manPage(app *cli.App) (string, error) {
	page := *app
	codes := strings.TrimPrefix(exitHelp, "EXIT CODES:\n")
	page.Description = mdEscape(app.Description) + "\n\n# EXIT CODES\n\n" + strings.ReplaceAll("\n"+codes, "\n", "\n ") // a code block
	page.Flags = manFlags(app.Flags)
	page.Commands = nil
	for _, c := range app.Commands {
		mc := *c
		mc.Usage = mdEscape(c.Usage)
		mc.UsageText = strings.TrimSpace(strings.TrimSuffix(c.Description, exitHelp)) // a code block: kept as written
		mc.Flags = manFlags(c.Flags)
		page.Commands = append(page.Commands, &mc)
	}
	return page.ToManWithSection(1)
}

// manFlag shows a visible flag with its usage escaped for Markdown.
type manFlag struct {
	cli.DocGenerationFlag
	usage string
}

func (f manFlag) GetUsage() string { return f.usage }
func (f manFlag) IsVisible() bool  { return true }

func manFlags(flags []cli.Flag) []cli.Flag {
	var out []cli.Flag
	for _, f := range flags {
		df, ok := f.(cli.DocGenerationFlag)
		if vf, visible := f.(cli.VisibleFlag); !ok || !visible || !vf.IsVisible() {
			continue
		}
		out = append(out, manFlag{df, mdEscape(df.GetUsage())})
	}
	return out
}

// mdEscape keeps Markdown from reading _, *, <, > and [ ] in s as markup;
// `code` spans stay.
func mdEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, "_", `\_`, "*", `\*`, "<", `\<`, ">", `\>`, "[", `\[`, "]", `\]`).Replace(s)
}
