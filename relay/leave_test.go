package relay

import "testing"

// A node leaves only when the seed said how many children it feeds in
// every stripe, that many were each fed a whole stripe, and none is being
// fed: a child that has not come yet, or is still fetching, keeps it.
func TestFeedingSettled(t *testing.T) {
	a, b, c := NodeID{1}, NodeID{2}, NodeID{3}
	type step func(f *feeding)
	owe := func(st uint8, n int) step { return func(f *feeding) { f.owe(st, n) } }
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
