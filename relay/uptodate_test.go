package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// agent is a receiver taking one session after another, as `serve` does,
// that counts the applies it runs.
type agent struct {
	r        *Receiver
	peer     Peer
	dir      string
	dest     string
	gate     <-chan struct{} // if set, every apply waits for it
	applies  atomic.Int32
	applying chan struct{} // an apply started
	results  chan Result   // one per session, in order
	stopped  chan struct{} // its loop returned
}

// startAgents starts n agents doing actions; hold, if set, gives agent i a
// channel each of its applies waits for.
func startAgents(t *testing.T, ctx context.Context, n int, actions string, hold func(i int) <-chan struct{}) []*agent {
	t.Helper()
	agents := make([]*agent, n)
	for i := range agents {
		a := &agent{dir: t.TempDir(), dest: filepath.Join(t.TempDir(), "out"), applying: make(chan struct{}, 1), results: make(chan Result, 8)}
		a.peer.Name = fmt.Sprintf("a%d", i)
		rand.Read(a.peer.ID[:])
		if hold != nil {
			a.gate = hold(i)
		}
		a.start(t, ctx, actions)
		agents[i] = a
	}
	return agents
}

// start runs the agent's receiver with actions, as `serve` with its flags.
func (a *agent) start(t *testing.T, ctx context.Context, actions string) {
	t.Helper()
	place := copyApply(a.dest)
	r, err := NewReceiver(testConfig(), ReceiverOptions{ID: a.peer.ID, Name: a.peer.Name, Dir: a.dir, Actions: actions,
		Apply: func(ctx context.Context, p Package) error {
			a.applies.Add(1)
			select {
			case a.applying <- struct{}{}:
			default:
			}
			if a.gate != nil {
				select {
				case <-a.gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return place(ctx, p)
		}})
	if err != nil {
		t.Fatal(err)
	}
	a.r = r
	a.peer.Addr = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(r.Port()))
	stopped := make(chan struct{})
	a.stopped = stopped
	go func() {
		defer close(stopped)
		for {
			res, err := r.Next(ctx)
			if err != nil {
				return
			}
			a.results <- res
		}
	}()
	t.Cleanup(func() {
		r.Close()
		<-stopped
	})
}

// restart stops the agent between sessions and starts it again with
// other actions, on the same state folder.
func (a *agent) restart(t *testing.T, ctx context.Context, actions string) {
	t.Helper()
	a.r.Close()
	<-a.stopped
	a.start(t, ctx, actions)
}

func agentPeers(agents []*agent) []Peer {
	var ps []Peer
	for _, a := range agents {
		ps = append(ps, a.peer)
	}
	return ps
}

// newSession signs a new session of the package at path.
func newSession(t *testing.T, ctx context.Context, path string, key ed25519.PrivateKey, force bool) *Signed {
	t.Helper()
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Force = force
	return Sign(m, key)
}

// A second session of a package the agents applied already, with the
// same actions, sends and runs nothing: every node is ok and up to date.
// Forced, it is applied again; an agent whose actions changed applies it.
func TestSamePackageAgainIsUpToDate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	size := 1<<20 + 77
	path, data := writePackage(t, size)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	agents := startAgents(t, ctx, 4, "copy to out", nil)

	type want struct {
		applied  []bool // per agent: applied in this session, else up to date
		uploaded bool   // the seed sent bytes
	}
	steps := []struct {
		name    string
		force   bool
		prepare func()
		want    want
	}{
		{"first session", false, nil, want{[]bool{true, true, true, true}, true}},
		{"same package again", false, nil, want{[]bool{false, false, false, false}, false}},
		{"same package, forced", true, nil, want{[]bool{true, true, true, true}, true}},
		{"same package, one agent restarted with other actions", false, func() { agents[2].restart(t, ctx, "extract into out") }, want{[]bool{false, false, true, false}, true}},
		{"and again", false, nil, want{[]bool{false, false, false, false}, false}},
	}
	for _, st := range steps {
		if st.prepare != nil {
			st.prepare()
		}
		for _, a := range agents {
			os.Remove(a.dest)
		}
		before := make([]int32, len(agents))
		for i, a := range agents {
			before[i] = a.applies.Load()
		}
		rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: newSession(t, ctx, path, key, st.force), Path: path, Peers: agentPeers(agents)})
		if err != nil {
			t.Fatalf("%s: seed: %v", st.name, err)
		}
		upToDate := 0
		for i, a := range agents {
			res := <-a.results
			n := rep.Nodes[i]
			if n.Status != StatusOK || res.Err != nil {
				t.Errorf("%s: agent %d: report %q %q, agent %v", st.name, i, n.Status, n.Error, res.Err)
				continue
			}
			got, _ := os.ReadFile(a.dest)
			if st.want.applied[i] {
				if n.Detail != "" || res.UpToDate || n.Received != int64(size) || a.applies.Load() != before[i]+1 || !bytes.Equal(got, data) {
					t.Errorf("%s: agent %d: detail %q, received %d, applies %d -> %d, placed %d bytes: want it downloaded and applied",
						st.name, i, n.Detail, n.Received, before[i], a.applies.Load(), len(got))
				}
				continue
			}
			upToDate++
			if n.Detail != DetailUpToDate || !res.UpToDate || n.Received != 0 || n.Bytes != int64(size) || a.applies.Load() != before[i] || got != nil {
				t.Errorf("%s: agent %d: detail %q, up to date %v, received %d, bytes %d, applies %d -> %d, placed %d bytes: want up to date, nothing downloaded or run",
					st.name, i, n.Detail, res.UpToDate, n.Received, n.Bytes, before[i], a.applies.Load(), len(got))
			}
		}
		if rep.UpToDate() != upToDate || rep.Failed() != 0 || rep.Busy() != 0 {
			t.Errorf("%s: report counts %d up to date, %d failed, %d busy; want %d, 0, 0", st.name, rep.UpToDate(), rep.Failed(), rep.Busy(), upToDate)
		}
		if (rep.Uploaded > 0) != st.want.uploaded {
			t.Errorf("%s: the seed uploaded %d bytes", st.name, rep.Uploaded)
		}
	}
}

// A package under another name is not the one in place (--to places it
// under its name): it is applied, though its bytes are the same.
func TestRenamedPackageIsApplied(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	path, _ := writePackage(t, 100<<10)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	agents := startAgents(t, ctx, 1, "copy to out", nil)
	renamed := filepath.Join(t.TempDir(), "app-renamed.bin")
	b, _ := os.ReadFile(path)
	os.WriteFile(renamed, b, 0o644)
	for _, p := range []string{path, renamed} {
		rep, err := RunSeed(ctx, testConfig(), SeedOptions{Signed: newSession(t, ctx, p, key, false), Path: p, Peers: agentPeers(agents)})
		if err != nil {
			t.Fatal(err)
		}
		<-agents[0].results
		if n := rep.Nodes[0]; n.Status != StatusOK || n.Detail != "" || n.Received != int64(len(b)) {
			t.Errorf("%s: %+v, want applied", filepath.Base(p), n)
		}
	}
	if got := agents[0].applies.Load(); got != 2 {
		t.Errorf("%d applies, want 2", got)
	}
}

// otherSession runs a session of the package at path to agents, whose
// applies wait on their gate: until then they are busy with it. It returns
// once every agent is applying, and the session's end.
func otherSession(t *testing.T, ctx context.Context, path string, key ed25519.PrivateKey, agents []*agent) <-chan error {
	t.Helper()
	over := make(chan error, 1)
	go func() {
		_, err := RunSeed(ctx, testConfig(), SeedOptions{Signed: newSession(t, ctx, path, key, false), Path: path, Peers: agentPeers(agents)})
		for _, a := range agents {
			<-a.results
		}
		over <- err
	}()
	for _, a := range agents {
		<-a.applying
	}
	return over
}

// An agent in another session is reported busy, neither failed nor
// placed in the trees, and the others go on; with every agent busy,
// nothing fails: the "0 of 4 ok" was 4 busy.
func TestBusyAgentIsReportedBusy(t *testing.T) {
	for _, tc := range []struct {
		name string
		busy int // agents 0..busy-1 are in another session
	}{
		{"one agent busy", 1},
		{"every agent busy", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			first, _ := writePackage(t, 200<<10)
			second, data := writePackage(t, 300<<10)
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			release := make(chan struct{})
			agents := startAgents(t, ctx, 4, "copy to out", func(i int) <-chan struct{} {
				if i < tc.busy {
					return release
				}
				return nil
			})
			other := otherSession(t, ctx, first, key, agents[:tc.busy])

			rep, err := RunSeed(ctx, testConfig(), SeedOptions{Signed: newSession(t, ctx, second, key, false), Path: second, Peers: agentPeers(agents)})
			close(release)
			if err != nil {
				t.Fatalf("seed: %v", err)
			}
			for i, n := range rep.Nodes {
				if i < tc.busy {
					if n.Status != StatusBusy || n.Error != "busy with another session" || n.Received != 0 || n.Parent != "" {
						t.Errorf("agent %d: %+v, want busy, never placed", i, n)
					}
					continue
				}
				<-agents[i].results
				if got, _ := os.ReadFile(agents[i].dest); n.Status != StatusOK || !bytes.Equal(got, data) {
					t.Errorf("agent %d: %+v, want ok with the package", i, n)
				}
			}
			if rep.Busy() != tc.busy || rep.Failed() != 0 {
				t.Errorf("report counts %d busy, %d failed; want %d, 0", rep.Busy(), rep.Failed(), tc.busy)
			}
			if err := <-other; err != nil {
				t.Errorf("the other session: %v", err)
			}
		})
	}
}

// With WaitBusy, a busy agent is offered the session again once
// discovery hands it back idle, and takes part; one still busy when the
// wait ends is reported busy.
func TestBusyAgentIsWaitedFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first, _ := writePackage(t, 200<<10)
	second, data := writePackage(t, 300<<10)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	release := make(chan struct{})
	agents := startAgents(t, ctx, 3, "copy to out", func(i int) <-chan struct{} {
		if i == 0 {
			return release
		}
		return nil
	})
	other := otherSession(t, ctx, first, key, agents[:1])

	// As discovery does, hand every agent to the session each round,
	// agent 0 as busy until its other session is over.
	var otherOver atomic.Bool
	late := make(chan Peer)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, a := range agents {
				p := a.peer
				p.Busy = a == agents[0] && !otherOver.Load()
				select {
				case late <- p:
				case <-watchCtx.Done():
					return
				}
			}
			select {
			case <-tick.C:
			case <-watchCtx.Done():
				return
			}
		}
	}()
	// The other session ends once this one found agent 0 busy.
	sawBusy := make(chan struct{})
	var once sync.Once
	otherErr := make(chan error, 1)
	go func() {
		select {
		case <-sawBusy:
		case <-ctx.Done():
			otherErr <- ctx.Err()
			return
		}
		close(release)
		err := <-other
		otherOver.Store(true)
		otherErr <- err
	}()
	rep, err := RunSeed(ctx, testConfig(), SeedOptions{
		Signed: newSession(t, ctx, second, key, false), Path: second, Peers: agentPeers(agents), Late: late,
		WaitBusy: time.Now().Add(30 * time.Second),
		Progress: func(p SeedProgress) {
			if p.Busy > 0 {
				once.Do(func() { close(sawBusy) })
			}
		},
	})
	stopWatch()
	<-watched
	if err != nil {
		t.Fatal(err)
	}
	if err := <-otherErr; err != nil {
		t.Fatalf("the other session: %v", err)
	}
	for i, n := range rep.Nodes {
		<-agents[i].results
		if got, _ := os.ReadFile(agents[i].dest); n.Status != StatusOK || !bytes.Equal(got, data) || n.Received != int64(len(data)) {
			t.Errorf("agent %d: %+v, want ok with the package, downloaded", i, n)
		}
	}

	// Busy throughout a short wait: reported busy when it ends.
	held := make(chan struct{})
	busy := startAgents(t, ctx, 2, "copy to out", func(i int) <-chan struct{} {
		if i == 0 {
			return held
		}
		return nil
	})
	other = otherSession(t, ctx, first, key, busy[:1])
	start := time.Now()
	rep, err = RunSeed(ctx, testConfig(), SeedOptions{Signed: newSession(t, ctx, second, key, false), Path: second, Peers: agentPeers(busy),
		WaitBusy: start.Add(time.Second)})
	took := time.Since(start)
	close(held)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Nodes[0].Status != StatusBusy || rep.Nodes[1].Status != StatusOK {
		t.Errorf("report %+v, want agent 0 busy and agent 1 ok", rep.Nodes)
	}
	if took < time.Second {
		t.Errorf("the session ended after %s, before its wait for the busy agent did", took)
	}
	if err := <-other; err != nil {
		t.Errorf("the other session: %v", err)
	}
	<-busy[1].results
}
