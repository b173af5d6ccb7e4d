package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/treecast/treecast/relay"
)

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
