package relay

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A node leaves only when the seed said how many children it feeds in
// every stripe, that many were each fed a whole stripe, and none is being
// fed: a child that has not come yet, or is still fetching, keeps it.
func TestFeedingSettled(t *testing.T) {
	a, b, c := NodeID{1}, NodeID{2}, NodeID{3}
	type step func(f *feeding)
	owe := func(st uint8, n int) step { return func(f *feeding) { f.owe(st, n, nil) } }
	fed := func(st uint8, id NodeID, whole bool) step {
		return func(f *feeding) { f.begin(); f.end(st, id, whole) }
	}
	feeding := func(f *feeding) { f.begin() }
	for _, tt := range []struct {
		name    string
		stripes int
		steps   []step
		want    bool
	}{
		{"nothing said", 2, nil, false},
		{"a leaf in both trees", 2, []step{owe(0, 0), owe(1, 0)}, true},
		{"one tree not said", 2, []step{owe(0, 0)}, false},
		{"an earlier seed says nothing", 1, []step{owe(0, -1)}, false},
		{"both children fed", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true), fed(0, b, true)}, true},
		{"one child not come yet", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true)}, false},
		{"one child's feed broke", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true), fed(0, b, false)}, false},
		{"and the seed moved that child away", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true), fed(0, b, false), owe(0, 1)}, false},
		{"one child fed twice counts once", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true), fed(0, a, true)}, false},
		{"a child fed in the other tree", 2, []step{owe(0, 1), owe(1, 0), fed(1, a, true)}, false},
		{"a third child still fetching", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true), fed(0, b, true), feeding}, false},
		{"a child the seed moved here since", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true), fed(0, b, true), owe(0, 3)}, false},
		{"and fed it too", 2, []step{owe(0, 2), owe(1, 0), fed(0, a, true), fed(0, b, true), owe(0, 3), fed(0, c, true)}, true},
		{"the seed's count not known yet", 0, []step{owe(0, 0), owe(1, 0)}, false},
	} {
		f := newFeeding()
		for _, s := range tt.steps {
			s(f)
		}
		if got := f.settled(tt.stripes); got != tt.want {
			t.Errorf("%s: settled %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A node that owes no child anything waits for the seed to acknowledge
// its result before it leaves. A child that comes meanwhile (one the seed
// moved here, the seed's own probe of this relay) is fed, and the node
// must not leave, cutting that feed off, once the acknowledgement comes.
func TestNoLeaveWhileAChildThatCameDuringTheAckWaitIsFed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	node, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	seed, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	// The seed's end takes nothing for now (a lossy link, a busy seed):
	// what the node sent waits unacknowledged.
	go node.Write(make([]byte, 32<<20))
	for sock := newFlowSocket(node); ; time.Sleep(time.Millisecond) {
		if d, ok := sock.delivered(); !ok {
			t.Skip("the platform shows no acknowledgements")
		} else if d.pending {
			break
		}
	}
	cfg := testConfig()
	s := &session{cfg: cfg, c: newCtrl(node, cfg.DeadAfter), feeding: newFeeding()}
	s.stripes.Store(2)
	s.feeding.owe(0, 0, nil)
	s.feeding.owe(1, 0, nil)
	resulted := make(chan struct{})
	close(resulted)
	left := make(chan bool, 1)
	go func() { left <- s.leaveWhenSettled(ctx, resulted) }()
	time.Sleep(100 * time.Millisecond) // it is waiting for the acknowledgement now
	select {
	case <-left:
		t.Fatal("left before the seed acknowledged what the node sent")
	default:
	}
	if !s.feeding.begin() { // a child it is given comes, and is fed
		t.Fatal("a child refused while the node had not left")
	}
	go io.Copy(io.Discard, seed) // the seed's end takes it all
	select {
	case <-left:
		t.Fatal("left the session while feeding a child")
	case <-time.After(500 * time.Millisecond):
	}
	s.feeding.end(0, NodeID{7}, true)
	select {
	case ok := <-left:
		if !ok {
			t.Error("did not leave once the child was fed")
		}
	case <-time.After(2 * time.Second):
		t.Error("did not leave once the child was fed")
	}
}

// A receiver run as an agent (`treecast serve`: Next again and again) whose
// apply fails reports so, and is done with the session: the seed's watch
// for late receivers, which finds it idle again once its session ended
// (the seed ended it, or its connection was lost after the failure), must
// not offer it the same session again, to run its failing apply over and
// over while the rest of the fleet finishes.
func TestFailedApplyIsNotOfferedAgain(t *testing.T) {
	for _, lost := range []bool{false, true} {
		name := "session kept"
		if lost {
			name = "connection lost after the failure"
		}
		t.Run(name, func(t *testing.T) { failedApplyOfferedOnce(t, lost) })
	}
}

func failedApplyOfferedOnce(t *testing.T, lost bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := testConfig()
	path, _ := writePackage(t, 256<<10)
	var applies atomic.Int32
	var busy [3]atomic.Bool
	hold := make(chan struct{})
	nodes := startNodes(t, ctx, cfg, 3, func(i int, o *ReceiverOptions, _ *context.Context) {
		o.Busy = func(b bool) { busy[i].Store(b) }
		switch i {
		case 0: // its install fails, every time
			o.Apply = func(context.Context, Package) error {
				applies.Add(1)
				return errors.New("install script exited 1")
			}
		case 2: // a long install keeps the session open meanwhile
			apply := o.Apply
			o.Apply = func(ctx context.Context, p Package) error {
				select {
				case <-hold:
				case <-ctx.Done():
					return ctx.Err()
				}
				return apply(ctx, p)
			}
		}
	})
	// Node 0 as an agent: once a session ends, it waits for the next.
	go func() {
		<-nodes[0].applied
		for ctx.Err() == nil {
			nodes[0].r.Next(ctx)
		}
	}()
	peers := peersOf(nodes)
	// Node 0 is reached through a proxy that can cut what it carries.
	var mu sync.Mutex
	var carried []net.Conn
	peers[0].Addr = proxy(t, ctx, peers[0].Addr, func(dst, src net.Conn, _ []byte) {
		mu.Lock()
		carried = append(carried, dst, src)
		mu.Unlock()
	})
	m, err := BuildManifest(ctx, path, 64<<10, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	late := make(chan Peer)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() { // as watchPeers: every receiver found, each round (8 a second here)
		for wctx.Err() == nil {
			for i, p := range peers {
				p.Busy = busy[i].Load()
				select {
				case late <- p:
				case <-wctx.Done():
					return
				}
			}
			time.Sleep(125 * time.Millisecond)
		}
	}()
	reports := make(chan *Report, 1)
	go func() {
		rep, err := RunSeed(ctx, cfg, SeedOptions{Signed: Sign(m, key), Path: path, Peers: peers, Late: late})
		if err != nil {
			rep = nil
		}
		reports <- rep
	}()
	// Node 0 failed, node 2 installing: give the watch two seconds.
	for applies.Load() == 0 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if lost {
		mu.Lock()
		for _, c := range carried {
			c.Close()
		}
		mu.Unlock()
	}
	time.Sleep(2 * time.Second)
	close(hold)
	var rep *Report
	select {
	case rep = <-reports:
	case <-time.After(10 * time.Second):
		t.Error("the session did not end 10 s after the last install")
	}
	stopWatch()
	if n := applies.Load(); n != 1 {
		t.Errorf("node 0's failing install ran %d times in one session", n)
	}
	if rep != nil && rep.Nodes[0].Status != StatusFailed {
		t.Errorf("node 0: %s %q", rep.Nodes[0].Status, rep.Nodes[0].Error)
	}
}
