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
