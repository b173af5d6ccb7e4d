package discover

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/mdns"
)

// The tests in this file run on a real network stack inside throwaway network
// namespaces: the outer test builds the namespaces and runs this test binary
// again inside them, with roleEnv saying which part to play.
const roleEnv = "TREECAST_DISCOVER_ROLE"

const announcingMarker = "treecast-discover-test: announcing"

// TestAnnounceBrowse announces two receivers on the loopback interface of a
// namespace that has no routes at all, and browses for them.
func TestAnnounceBrowse(t *testing.T) {
	if os.Getenv(roleEnv) != "loopback" {
		ns := netns(t, "lo")
		ip(t, "-n", ns, "link", "set", "lo", "multicast", "on")
		if out := ip(t, "-n", ns, "-4", "route", "show"); out != "" {
			t.Fatalf("namespace %s has routes, want none:\n%s", ns, out)
		}
		runIn(t, ns, "TestAnnounceBrowse", "loopback")
		return
	}

	log := testLogger(t)
	cfg := Config{Iface: "lo", Round: 250 * time.Millisecond}
	alpha := announce(t, cfg, Announcement{ID: idA, Name: "alpha", Group: "red", State: StateIdle, Version: 1, Port: 7001}, log)
	beta := announce(t, cfg, Announcement{ID: idB, Name: "beta box", Group: "blue", State: StateIdle, Version: 1, Port: 7002}, log)
	wantAlpha := Peer{Instance: "alpha-01234567", ID: idA, Name: "alpha", Group: "red", State: StateIdle, Version: 1,
		Addr: netip.MustParseAddrPort("127.0.0.1:7001")}
	wantBeta := Peer{Instance: "beta-box-fedcba98", ID: idB, Name: "beta box", Group: "blue", State: StateIdle, Version: 1,
		Addr: netip.MustParseAddrPort("127.0.0.1:7002")}
	if got := alpha.Instance(); got != wantAlpha.Instance {
		t.Fatalf("alpha announces instance %q, want %q", got, wantAlpha.Instance)
	}

	t.Run("every group, stops at Expect", func(t *testing.T) {
		var seen []string
		opt := BrowseOptions{AnyGroup: true, Expect: 2, Wait: 10 * time.Second, OnPeer: func(p Peer) { seen = append(seen, p.ID) }}
		start := time.Now()
		got := browse(t, cfg, opt, log, wantAlpha, wantBeta)
		took := time.Since(start)
		if took >= opt.Wait {
			t.Errorf("Browse took %v, want it to stop before Wait (%v) once %d peers are found", took, opt.Wait, opt.Expect)
		}
		slices.Sort(seen)
		if !slices.Equal(seen, []string{idA, idB}) {
			t.Errorf("OnPeer saw %q, want each of %q once", seen, []string{idA, idB})
		}
		t.Logf("found %d peers in %v", len(got), took)
	})

	t.Run("group filter", func(t *testing.T) {
		browse(t, cfg, BrowseOptions{Group: "red", Wait: time.Second}, log, wantAlpha)
		browse(t, cfg, BrowseOptions{Group: "blue", Expect: 1, Wait: 10 * time.Second}, log, wantBeta)
		browse(t, cfg, BrowseOptions{Group: "green", Wait: 600 * time.Millisecond}, log)
		browse(t, cfg, BrowseOptions{Wait: 600 * time.Millisecond}, log) // no group: neither
	})

	t.Run("SetState shows in the next browse", func(t *testing.T) {
		if err := alpha.SetState(StateBusy); err != nil {
			t.Fatalf("SetState: %v", err)
		}
		busy := wantAlpha
		busy.State = StateBusy
		browse(t, cfg, BrowseOptions{Group: "red", Expect: 1, Wait: 10 * time.Second}, log, busy)
		if err := alpha.SetState(StateIdle); err != nil {
			t.Fatalf("SetState: %v", err)
		}
		browse(t, cfg, BrowseOptions{Group: "red", Expect: 1, Wait: 10 * time.Second}, log, wantAlpha)
		if err := alpha.SetState("asleep"); err == nil {
			t.Fatal(`SetState("asleep") succeeded`)
		}
	})

	t.Run("ctx ends first", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		peers, err := Browse(ctx, cfg, BrowseOptions{Wait: 10 * time.Second}, log)
		if !errors.Is(err, context.Canceled) || peers != nil {
			t.Fatalf("Browse with an ended ctx = %+v, %v; want nothing and context.Canceled", peers, err)
		}
		ctx, cancel = context.WithTimeout(t.Context(), 600*time.Millisecond)
		defer cancel()
		start := time.Now()
		peers, err = Browse(ctx, cfg, BrowseOptions{Group: "red", Wait: 10 * time.Second}, log)
		if err != nil || !slices.Equal(peers, []Peer{wantAlpha}) {
			t.Fatalf("Browse until ctx times out = %+v, %v; want alpha and no error", peers, err)
		}
		if took := time.Since(start); took >= 10*time.Second {
			t.Fatalf("Browse took %v, want it to end with ctx", took)
		}
	})

	t.Run("Close hides the receiver", func(t *testing.T) {
		if err := beta.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := beta.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := beta.SetState(StateBusy); !errors.Is(err, ErrClosed) {
			t.Fatalf("SetState after Close: err = %v, want ErrClosed", err)
		}
		browse(t, cfg, BrowseOptions{AnyGroup: true, Expect: 2, Wait: time.Second}, log, wantAlpha)
	})
}

// TestCrossHost runs a receiver with two links in one namespace and a seed in
// another; neither has a default route nor IPv6. Both pick their interfaces
// themselves. The seed must find the receiver at its address on the link the
// two share, although the receiver answers on both of its links.
func TestCrossHost(t *testing.T) {
	want := Peer{Instance: "gamma-01234567", ID: idA, Name: "gamma", Group: "", State: StateIdle, Version: 1,
		Addr: netip.MustParseAddrPort("10.77.0.1:7100")}
	switch os.Getenv(roleEnv) {
	case "receiver":
		log := testLogger(t)
		ifaces, err := Interfaces(Config{})
		if err != nil {
			t.Fatalf("Interfaces: %v", err)
		}
		var names []string
		for _, ifi := range ifaces {
			names = append(names, ifi.Name)
		}
		if slices.Sort(names); !slices.Equal(names, []string{"a0", "a1"}) {
			t.Fatalf("Interfaces = %q, want a0 and a1", names)
		}
		addrs, err := LocalAddrs(Config{})
		if err != nil {
			t.Fatalf("LocalAddrs: %v", err)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		if wantAddrs := []netip.Addr{netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.78.0.1")}; !slices.Equal(addrs, wantAddrs) {
			t.Fatalf("LocalAddrs = %v, want %v", addrs, wantAddrs)
		}
		a := announce(t, Config{}, Announcement{ID: want.ID, Name: want.Name, State: want.State, Version: want.Version, Port: 7100}, log)
		untilStdinCloses(t)
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		return
	case "seed":
		log := testLogger(t)
		cfg := Config{Round: 250 * time.Millisecond}
		browse(t, cfg, BrowseOptions{Expect: 1, Wait: 10 * time.Second}, log, want)
		// Several rounds, each answered from both of the receiver's links.
		browse(t, cfg, BrowseOptions{Wait: 1500 * time.Millisecond}, log, want)
		return
	}

	rx, seed := netns(t, "rx"), netns(t, "seed")
	for _, ns := range []string{rx, seed} {
		noIPv6(t, ns)
	}
	ip(t, "link", "add", "a0", "netns", rx, "type", "veth", "peer", "name", "b0", "netns", seed)
	ip(t, "link", "add", "a1", "netns", rx, "type", "veth", "peer", "name", "b1", "netns", seed)
	ip(t, "-n", rx, "addr", "add", "10.77.0.1/24", "dev", "a0")
	ip(t, "-n", rx, "addr", "add", "10.78.0.1/24", "dev", "a1")
	ip(t, "-n", seed, "addr", "add", "10.77.0.2/24", "dev", "b0")
	for _, l := range []struct{ ns, dev string }{{rx, "a0"}, {rx, "a1"}, {seed, "b0"}, {seed, "b1"}} {
		ip(t, "-n", l.ns, "link", "set", l.dev, "up")
	}

	stop := background(t, rx, "TestCrossHost", "receiver")
	runIn(t, seed, "TestCrossHost", "seed")
	stop()
}

// TestSpoofedAnswers puts a receiver, a spoofer and a seed on one bridged
// LAN, 10.80.0.0/24. The spoofer first answers for the receiver's instance
// and node id with addresses the seed must never dial, alone, then with the
// receiver answering too; then it announces itself under the receiver's
// node id, as a machine with a copied id would.
func TestSpoofedAnswers(t *testing.T) {
	real := Peer{Instance: "alpha-01234567", ID: idA, Name: "alpha", State: StateIdle, Version: 1,
		Addr: netip.MustParseAddrPort("10.80.0.1:7100")}
	twin := netip.MustParseAddrPort("10.80.0.66:7100")
	switch os.Getenv(roleEnv) {
	case "receiver":
		announce(t, Config{}, Announcement{ID: real.ID, Name: real.Name, State: real.State, Version: real.Version, Port: 7100}, testLogger(t))
		untilStdinCloses(t)
		return
	case "spoof-bad":
		// The seed would dial ssh on its own host, hosts off the LAN, or
		// addresses that are no host's.
		ifi, err := net.InterfaceByName("s0")
		if err != nil {
			t.Fatal(err)
		}
		bad := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(192, 0, 2, 7), net.IPv4(10, 81, 0, 1), net.IPv4(169, 254, 1, 1),
			net.IPv4(0, 0, 0, 0), net.IPv4(224, 0, 0, 251), net.IPv4(255, 255, 255, 255)}
		txt := []string{"v=1", "id=" + idA, "name=alpha", "state=idle"}
		svc, err := mdns.NewMDNSService(real.Instance, Service, "local.", real.Instance+".local.", 22, bad, txt)
		if err != nil {
			t.Fatal(err)
		}
		srv, err := mdns.NewServer(&mdns.Config{Zone: svc, Iface: ifi, Logger: libLogger(testLogger(t))})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		untilStdinCloses(t)
		return
	case "spoof-twin":
		announce(t, Config{}, Announcement{ID: real.ID, Name: "mallory", State: StateIdle, Version: 1, Port: 7100}, testLogger(t))
		untilStdinCloses(t)
		return
	case "seed-spoofed":
		var logs lockedBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		browse(t, Config{Round: 250 * time.Millisecond}, BrowseOptions{Wait: 750 * time.Millisecond}, log)
		for _, dropped := range []string{
			"addr=127.0.0.1 iface=br0 why=\"a loopback address, asked on br0\"",
			"addr=192.0.2.7 iface=br0 why=\"outside the subnets of br0\"",
			"addr=10.81.0.1 iface=br0 why=\"outside the subnets of br0\"",
			"addr=169.254.1.1 iface=br0 why=\"a link-local address, and br0 has none\"",
			"addr=0.0.0.0 iface=br0 why=\"not a host's address\"",
			"addr=255.255.255.255 iface=br0 why=\"not a host's address\"",
			"addr=224.0.0.251 iface=br0 why=\"a multicast address\"",
		} {
			if !strings.Contains(logs.String(), dropped) {
				t.Errorf("the debug log does not say it dropped %s:\n%s", dropped, logs.String())
			}
		}
		return
	case "seed-both":
		browse(t, Config{Round: 250 * time.Millisecond}, BrowseOptions{Wait: 1500 * time.Millisecond}, testLogger(t), real)
		return
	case "seed-twin":
		// The receiver and the twin answer the same query: Browse must not
		// stop at the first answer although one peer is all it expects.
		for _, opt := range []BrowseOptions{{Expect: 1, Wait: 1500 * time.Millisecond}, {Wait: 1500 * time.Millisecond}} {
			got, err := Browse(t.Context(), Config{Round: 250 * time.Millisecond}, opt, testLogger(t))
			if err != nil {
				t.Fatalf("Browse: %v", err)
			}
			if len(got) != 1 || !got[0].Conflicted() {
				t.Fatalf("Browse(expect %d) found %+v, want alpha's node id flagged as conflicted", opt.Expect, got)
			}
			if addrs := []netip.AddrPort{got[0].Addr, got[0].Conflict}; !slices.Contains(addrs, real.Addr) || !slices.Contains(addrs, twin) {
				t.Fatalf("Browse(expect %d) found node id %s at %v, want at %v and %v", opt.Expect, got[0].ID, addrs, real.Addr, twin)
			}
		}
		return
	}

	rx, spoof, seed := netns(t, "rx"), netns(t, "spoof"), netns(t, "seed")
	for _, ns := range []string{rx, spoof, seed} {
		noIPv6(t, ns)
	}
	ip(t, "-n", seed, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
	ip(t, "link", "add", "r0", "netns", rx, "type", "veth", "peer", "name", "p0", "netns", seed)
	ip(t, "link", "add", "s0", "netns", spoof, "type", "veth", "peer", "name", "p1", "netns", seed)
	ip(t, "-n", seed, "link", "set", "p0", "master", "br0")
	ip(t, "-n", seed, "link", "set", "p1", "master", "br0")
	ip(t, "-n", rx, "addr", "add", "10.80.0.1/24", "dev", "r0")
	ip(t, "-n", spoof, "addr", "add", "10.80.0.66/24", "dev", "s0")
	ip(t, "-n", seed, "addr", "add", "10.80.0.2/24", "dev", "br0")
	for _, l := range []struct{ ns, dev string }{{rx, "r0"}, {spoof, "s0"}, {seed, "p0"}, {seed, "p1"}, {seed, "br0"}} {
		ip(t, "-n", l.ns, "link", "set", l.dev, "up")
	}

	stopSpoof := background(t, spoof, "TestSpoofedAnswers", "spoof-bad")
	runIn(t, seed, "TestSpoofedAnswers", "seed-spoofed")
	background(t, rx, "TestSpoofedAnswers", "receiver")
	runIn(t, seed, "TestSpoofedAnswers", "seed-both")
	stopSpoof()
	background(t, spoof, "TestSpoofedAnswers", "spoof-twin")
	runIn(t, seed, "TestSpoofedAnswers", "seed-twin")
}

// background runs test inside ns, playing role, until it prints
// announcingMarker. The returned function closes its stdin, which ends it,
// and fails the test unless it passed; the test's cleanup calls it too.
func background(t *testing.T, ns, test, role string) (stop func()) {
	t.Helper()
	cmd := command(t, ns, test, role)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", role, err)
	}
	var out lockedBuffer
	ready := make(chan bool, 1)
	var copied sync.WaitGroup
	copied.Go(func() {
		s := bufio.NewScanner(stdout)
		marked := false
		for s.Scan() {
			out.Write(append(s.Bytes(), '\n'))
			if !marked && s.Text() == announcingMarker {
				marked = true
				ready <- true
			}
		}
		if !marked {
			ready <- false
		}
	})
	stopped := false
	wait := func() error {
		if stopped {
			return nil
		}
		stopped = true
		stdin.Close()
		copied.Wait()
		return cmd.Wait()
	}
	t.Cleanup(func() { wait() })
	select {
	case ok := <-ready:
		if !ok {
			wait()
			t.Fatalf("%s ended before it announced:\n%s%s", role, out.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		wait()
		t.Fatalf("%s did not announce within 30s:\n%s%s", role, out.String(), stderr.String())
	}
	return func() {
		t.Helper()
		if stopped {
			return
		}
		if err := wait(); err != nil || !strings.Contains(out.String(), "--- PASS: "+test) {
			t.Fatalf("%s: %v\n%s%s", role, err, out.String(), stderr.String())
		}
		if testing.Verbose() {
			t.Logf("%s:\n%s", role, out.String())
		}
	}
}

// untilStdinCloses tells the outer test that this role is announcing, then
// waits until the outer test closes stdin.
func untilStdinCloses(t *testing.T) {
	fmt.Println(announcingMarker)
	if _, err := io.Copy(io.Discard, os.Stdin); err != nil {
		t.Errorf("wait for stdin to close: %v", err)
	}
}

// announce starts an announcer that is closed when the test ends.
func announce(t *testing.T, cfg Config, a Announcement, log *slog.Logger) *Announcer {
	t.Helper()
	an, err := Announce(cfg, a, log)
	if err != nil {
		t.Fatalf("Announce %s: %v", a.Name, err)
	}
	t.Cleanup(func() { an.Close() })
	return an
}

// browse runs Browse and checks that it found exactly want.
func browse(t *testing.T, cfg Config, opt BrowseOptions, log *slog.Logger, want ...Peer) []Peer {
	t.Helper()
	got, err := Browse(t.Context(), cfg, opt, log)
	if err != nil {
		t.Fatalf("Browse(group %q): %v", opt.Group, err)
	}
	if want == nil {
		want = []Peer{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Browse(group %q) found\n%+v\nwant\n%+v", opt.Group, got, want)
	}
	return got
}

// netns creates a network namespace with loopback up and deletes it when the
// test ends.
func netns(t *testing.T, suffix string) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("creating network namespaces needs root; CI runs this test as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("this test needs iproute2 (apt-get install iproute2): %v", err)
	}
	name := fmt.Sprintf("tcdisc-%d-%s", os.Getpid(), suffix)
	exec.Command("ip", "netns", "del", name).Run() // left over from a killed run with the same pid
	ip(t, "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("delete namespace %s: %v\n%s", name, err, out)
		}
	})
	ip(t, "-n", name, "link", "set", "lo", "up")
	return name
}

// noIPv6 turns IPv6 off in ns, for links created after it.
func noIPv6(t *testing.T, ns string) {
	t.Helper()
	const script = "echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6"
	if out, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("turn IPv6 off in %s: %v\n%s", ns, err, out)
	}
}

// ip runs the ip command and returns its output.
func ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// command runs test of this binary inside namespace ns, playing role.
func command(t *testing.T, ns, test, role string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatalf("find the test binary: %v", err)
	}
	cmd := exec.Command("ip", "netns", "exec", ns, exe,
		"-test.run=^"+test+"$", "-test.v", "-test.count=1", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	return cmd
}

// runIn runs test inside ns and fails unless it passed.
func runIn(t *testing.T, ns, test, role string) {
	t.Helper()
	out, err := command(t, ns, test, role).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+test)) {
		t.Fatalf("%s in namespace %s: %v\n%s", test, ns, err, out)
	}
	if testing.Verbose() {
		t.Logf("%s in namespace %s:\n%s", test, ns, out)
	}
}

// testLogger logs at debug level into a buffer that is printed if the test
// fails; the mdns library may still log after the test ends.
func testLogger(t *testing.T) *slog.Logger {
	var buf lockedBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
