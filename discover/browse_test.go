package discover

import (
	"net/netip"
	"slices"
	"testing"
)

// TestBrowserMerges feeds a browser what the queries of a browse report, in
// order, and checks what Browse would return.
func TestBrowserMerges(t *testing.T) {
	peer := func(id, name, group, addr string) Peer {
		return Peer{Instance: name + "-" + id[:8], ID: id, Name: name, Group: group, State: StateIdle, Version: 1,
			Addr: netip.MustParseAddrPort(addr)}
	}
	conflict := func(p Peer, other string) Peer {
		p.Conflict = netip.MustParseAddrPort(other)
		return p
	}
	alpha := peer(idA, "alpha", "red", "10.1.0.7:7000")
	beta := peer(idB, "beta", "red", "10.1.0.8:7000")
	gamma := peer("00112233445566778899aabbccddeeff", "gamma", "", "10.1.0.9:7000")
	busyAlpha := alpha
	busyAlpha.State = StateBusy
	for _, tc := range []struct {
		name       string
		group      string
		anyGroup   bool
		expect     int
		reports    []Peer
		want       []Peer
		wantFound  []string // OnPeer calls, by name
		wantEnough bool
	}{
		{
			name:      "one id, one address",
			anyGroup:  true,
			reports:   []Peer{alpha, alpha, beta},
			want:      []Peer{alpha, beta},
			wantFound: []string{"alpha", "beta"},
		},
		{
			name:      "a changed state is not a conflict",
			anyGroup:  true,
			reports:   []Peer{alpha, busyAlpha},
			want:      []Peer{alpha},
			wantFound: []string{"alpha"},
		},
		{
			name:      "one id at two addresses",
			anyGroup:  true,
			reports:   []Peer{alpha, peer(idA, "mallory", "red", "10.1.0.66:7000"), beta},
			want:      []Peer{conflict(alpha, "10.1.0.66:7000"), beta},
			wantFound: []string{"alpha", "beta"},
		},
		{
			name:      "one id at two ports of one address: restarted, the later answer kept",
			anyGroup:  true,
			reports:   []Peer{alpha, peer(idA, "alpha", "red", "10.1.0.7:22"), beta},
			want:      []Peer{peer(idA, "alpha", "red", "10.1.0.7:22"), beta},
			wantFound: []string{"alpha", "beta"},
		},
		{
			name:      "a restart does not hide a twin",
			anyGroup:  true,
			reports:   []Peer{alpha, peer(idA, "alpha", "red", "10.1.0.7:22"), peer(idA, "mallory", "red", "10.1.0.66:7000")},
			want:      []Peer{conflict(peer(idA, "alpha", "red", "10.1.0.7:22"), "10.1.0.66:7000")},
			wantFound: []string{"alpha"},
		},
		{
			name:     "a third address changes nothing",
			anyGroup: true,
			reports:  []Peer{alpha, peer(idA, "alpha", "red", "10.1.0.66:7000"), peer(idA, "alpha", "red", "10.1.0.67:7000"), alpha},
			want:     []Peer{conflict(alpha, "10.1.0.66:7000")},
		},
		{
			name:    "in another group, no conflict",
			group:   "red",
			reports: []Peer{alpha, peer(idA, "alpha", "blue", "10.1.0.66:7000")},
			want:    []Peer{alpha},
		},
		{
			name:      "no group: only peers announcing none",
			reports:   []Peer{alpha, gamma, beta},
			want:      []Peer{gamma},
			wantFound: []string{"gamma"},
		},
		{
			name:    "no group: peers of a group do not count towards Expect",
			expect:  1,
			reports: []Peer{alpha, beta},
			want:    []Peer{},
		},
		{
			name:       "expected peers found",
			anyGroup:   true,
			expect:     2,
			reports:    []Peer{alpha, beta},
			want:       []Peer{alpha, beta},
			wantEnough: true,
		},
		{
			name:       "a conflicted peer does not count as found",
			anyGroup:   true,
			expect:     2,
			reports:    []Peer{alpha, beta, peer(idA, "mallory", "red", "10.1.0.66:7000")},
			want:       []Peer{conflict(alpha, "10.1.0.66:7000"), beta},
			wantEnough: false,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var found []string
			b := &browser{seen: make(map[string]Peer), opt: BrowseOptions{Group: tc.group, AnyGroup: tc.anyGroup, Expect: tc.expect,
				OnPeer: func(p Peer) { found = append(found, p.Name) }}}
			for _, p := range tc.reports {
				b.add(p)
			}
			if got := b.peers(); !slices.Equal(got, tc.want) {
				t.Errorf("Browse would return\n%+v\nwant\n%+v", got, tc.want)
			}
			if tc.wantFound != nil && !slices.Equal(found, tc.wantFound) {
				t.Errorf("OnPeer saw %q, want %q", found, tc.wantFound)
			}
			if got := b.enough(); got != tc.wantEnough {
				t.Errorf("enough = %v, want %v", got, tc.wantEnough)
			}
		})
	}
}
