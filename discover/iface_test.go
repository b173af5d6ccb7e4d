package discover

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestUsable(t *testing.T) {
	v4 := []netip.Prefix{netip.MustParsePrefix("10.0.0.2/24")}
	up := net.FlagUp | net.FlagMulticast
	for _, tc := range []struct {
		name     string
		flags    net.Flags
		prefixes []netip.Prefix
		wantErr  string
	}{
		{name: "up multicast IPv4", flags: up, prefixes: v4},
		{name: "down", flags: net.FlagMulticast, prefixes: v4, wantErr: "eth7 is down: bring it up with `ip link set eth7 up`"},
		{name: "no multicast", flags: net.FlagUp, prefixes: v4, wantErr: "`ip link set eth7 multicast on`"},
		{name: "no IPv4", flags: up, wantErr: "eth7 has no IPv4 address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := usable(net.Interface{Name: "eth7", Flags: tc.flags}, tc.prefixes)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("usable: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !IsNoInterface(err) {
				t.Fatalf("usable: err = %v, want ErrNoInterface containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestInterfacesUnknownName(t *testing.T) {
	_, err := Interfaces(Config{Iface: "tcnope9"})
	if !IsNoInterface(err) || !strings.Contains(err.Error(), `no interface named "tcnope9"`) ||
		!strings.Contains(err.Error(), "ip -br link") {
		t.Fatalf("Interfaces: err = %v, want ErrNoInterface naming tcnope9 and how to list interfaces", err)
	}
	if _, err := Announce(Config{Iface: "tcnope9"}, Announcement{ID: idA, Name: "a", State: StateIdle, Version: 1, Port: 1}, nil); !IsNoInterface(err) {
		t.Fatalf("Announce: err = %v, want ErrNoInterface", err)
	}
	if _, err := Browse(t.Context(), Config{Iface: "tcnope9"}, BrowseOptions{}, nil); !IsNoInterface(err) {
		t.Fatalf("Browse: err = %v, want ErrNoInterface", err)
	}
}

func TestAnnounceRejectsBadAnnouncement(t *testing.T) {
	ok := Announcement{ID: idA, Name: "alpha", State: StateIdle, Version: 1, Port: 7000}
	for _, tc := range []struct {
		name    string
		a       Announcement
		wantErr string
	}{
		{"name too long", with(ok, func(a *Announcement) { a.Name = strings.Repeat("n", 300) }), "name is 300 bytes"},
		{"group too long", with(ok, func(a *Announcement) { a.Group = strings.Repeat("g", 256) }), "group is 256 bytes"},
		{"control character", with(ok, func(a *Announcement) { a.Name = "tab\there" }), "control character"},
		{"port 0", with(ok, func(a *Announcement) { a.Port = 0 }), "port 0"},
		{"port too big", with(ok, func(a *Announcement) { a.Port = 70000 }), "port 70000"},
		{"bad state", with(ok, func(a *Announcement) { a.State = "ready" }), `state "ready"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			an, err := Announce(Config{Iface: "lo"}, tc.a, nil)
			if err == nil {
				an.Close()
				t.Fatal("Announce accepted it")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Announce: err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestRefuse: a peer is dialled only at an IPv4 unicast address in a subnet
// of the interface the query went out of.
func TestRefuse(t *testing.T) {
	eth := link{ifi: net.Interface{Name: "eth0", Flags: net.FlagUp | net.FlagMulticast},
		prefixes: []netip.Prefix{netip.MustParsePrefix("10.1.0.5/24"), netip.MustParsePrefix("172.16.4.1/30")}}
	lo := link{ifi: net.Interface{Name: "lo", Flags: net.FlagUp | net.FlagLoopback | net.FlagMulticast},
		prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}}
	ll := link{ifi: net.Interface{Name: "eth1", Flags: net.FlagUp | net.FlagMulticast},
		prefixes: []netip.Prefix{netip.MustParsePrefix("169.254.7.7/16")}}
	for _, tc := range []struct {
		l       link
		addr    string
		wantWhy string // "" = dialled
	}{
		{eth, "10.1.0.7", ""},
		{eth, "10.1.0.5", ""}, // a receiver on the seed's own host
		{eth, "172.16.4.2", ""},
		{eth, "172.16.4.6", "outside the subnets of eth0"},
		{eth, "10.1.1.7", "outside the subnets of eth0"},
		{eth, "192.168.9.7", "outside the subnets of eth0"},
		{eth, "8.8.8.8", "outside the subnets of eth0"},
		{eth, "127.0.0.1", "a loopback address, asked on eth0"},
		{eth, "127.1.2.3", "a loopback address, asked on eth0"},
		{eth, "0.0.0.0", "not a host's address"},
		{eth, "255.255.255.255", "not a host's address"},
		{eth, "224.0.0.251", "a multicast address"},
		{eth, "239.1.2.3", "a multicast address"},
		{eth, "169.254.1.1", "a link-local address, and eth0 has none"},
		{eth, "::1", "not an IPv4 address"},
		{eth, "fe80::1", "not an IPv4 address"},
		{lo, "127.0.0.1", ""},
		{lo, "10.1.0.7", "outside the subnets of lo"},
		{ll, "169.254.1.1", ""},
		{ll, "127.0.0.1", "a loopback address, asked on eth1"},
	} {
		if got := tc.l.refuse(netip.MustParseAddr(tc.addr)); got != tc.wantWhy {
			t.Errorf("asked on %s, answered %s: refused because %q, want %q", tc.l.ifi.Name, tc.addr, got, tc.wantWhy)
		}
	}
}
