package relay

import (
	"testing"
	"time"
)

// maxFuzzOps and maxFuzzNodes bound FuzzTreeOps: each step checks every
// link, so a fleet grown without bound would make each input slower.
const (
	maxFuzzOps   = 3 << 10
	maxFuzzNodes = 200
)

// FuzzTreeOps drives a tree through what a session does to it, in any
// order: late joiners, losses, failures, complaints, progress, slow rates,
// retries, distrusted, silent and retired relays. It must never panic, every move must be a
// change, and after each step every link must hold: a parent lists its
// child once, no cycles, at most two children per node and stripe, and a
// node out of the trees is in none.
func FuzzTreeOps(f *testing.F) {
	f.Add([]byte{2, 16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{1, 7, 6, 6, 6, 1, 3, 2, 5, 7, 9, 8, 0, 4})
	f.Add([]byte{2, 40, 5, 5, 5, 5, 5, 5, 5, 5, 6, 3, 3, 1, 7, 7, 8})
	f.Add([]byte("10!10000!"))                           // a complaint while waiting for a parent
	f.Add([]byte("0\a70000100100100100101008000800000")) // two slow relays move one node
	// a retry placed in a leaf's place moves a node placed by the same retry
	f.Add([]byte("0\a20008020020020001070008000200010000020000yB00002002002000700$0800070000}0200!900102008000000!*0!Y080009"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) < 2 || len(ops) > maxFuzzOps {
			return // a session's worth of steps; longer adds nothing but time
		}
		stripes, n := int(ops[0]%2)+1, int(ops[1]%64)+1
		tr, _ := planned(stripes, n)
		now := t0
		held := make([]int64, len(tr.nodes))
		next := func(i *int) int {
			if *i >= len(ops) {
				return 0
			}
			*i++
			return int(ops[*i-1])
		}
		for i := 2; i < len(ops); {
			op := next(&i)
			id := next(&i)%len(tr.nodes) + 1
			st := next(&i) % stripes
			before := tr.parents()
			var moves []move
			switch op % 10 {
			case 0:
				if len(tr.nodes) >= maxFuzzNodes {
					continue
				}
				id = tr.add()
				held = append(held, 0)
				moves = tr.join(id, now)
			case 1:
				moves = tr.lose(id, op&0x80 != 0, now)
			case 2:
				moves = tr.fail(id, now)
			case 3:
				moves = tr.complain(id, st, tr.parentOf(id, st), now)
			case 4:
				moves = tr.forgive(id, st, now)
			case 5:
				// progress: a node gains what its parents could give it
				held[id-1] = min(testSize, held[id-1]+int64(next(&i))*testChunk)
				tr.setHeld(id, held[id-1])
				per := make([]int64, stripes)
				for s := range per {
					per[s] = held[id-1] / int64(stripes)
				}
				tr.setStripeHeld(id, per)
				tr.reported(id, now.Sub(t0), now)
			case 6:
				now = now.Add(time.Duration(next(&i)) * 100 * time.Millisecond)
				moves, _ = tr.checkRates(now)
			case 7:
				now = now.Add(time.Duration(next(&i)) * 100 * time.Millisecond)
				moves = tr.retry(now)
			case 8:
				if op&0x80 != 0 {
					moves = tr.distrust(id, now)
					break
				}
				tr.setHeld(id, testSize)
				held[id-1] = testSize
				tr.retire(id)
			case 9:
				if op&0x80 != 0 { // silent to the seed for a while, or heard again
					if op&0x40 != 0 {
						tr.heard(id)
						break
					}
					moves = tr.hush(id, now)
					break
				}
				moves = tr.join(id, now)
			}
			t.Logf("op %d node %d stripe %d at %s: moves %v", op%10, id, st, now.Sub(t0), moves)
			checkMoves(t, tr, before, moves)
			checkLinks(t, tr)
		}
	})
}

// checkLinks checks what holds at every step of a session, waiting nodes
// included: see FuzzTreeOps.
func checkLinks(t *testing.T, tr *tree) {
	t.Helper()
	for st := range tr.stripes {
		for _, c := range tr.seed[st] {
			if tr.parentOf(c, st) != seedID {
				t.Fatalf("stripe %d: the seed lists %d, whose parent is %d", st, c, tr.parentOf(c, st))
			}
		}
	}
	for i := range tr.nodes {
		id, n := i+1, &tr.nodes[i]
		for st := range tr.stripes {
			p := n.parent[st]
			if !n.in && (p != noParent || len(n.children[st]) > 0) {
				t.Fatalf("node %d is out but has parent %d and children %v in stripe %d", id, p, n.children[st], st)
			}
			if len(n.children[st]) > 2 {
				t.Fatalf("node %d has %d children in stripe %d", id, len(n.children[st]), st)
			}
			for _, c := range n.children[st] {
				if tr.parentOf(c, st) != id {
					t.Fatalf("node %d lists child %d in stripe %d, whose parent is %d", id, c, st, tr.parentOf(c, st))
				}
			}
			if p == noParent {
				continue
			}
			if p != seedID && !tr.node(p).in {
				t.Fatalf("node %d's parent %d in stripe %d is out", id, p, st)
			}
			if k := *tr.kids(p, st); count(k, id) != 1 {
				t.Fatalf("node %d's parent %d in stripe %d lists %v", id, p, st, k)
			}
			for q, d := p, 0; q != seedID; d++ {
				if q == id || d > len(tr.nodes) {
					t.Fatalf("node %d is in a cycle in stripe %d: %v", id, st, tr.parents())
				}
				if q = tr.parentOf(q, st); q == noParent {
					break // below a node waiting for a parent
				}
			}
		}
	}
}
