package discover

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// ErrNoInterface means there is no network interface discovery can use.
// The configuration or the host's network has to change; retrying will not help.
var ErrNoInterface = errors.New("no usable network interface")

// IsNoInterface reports whether err means no interface could be used.
func IsNoInterface(err error) bool { return errors.Is(err, ErrNoInterface) }

// Interfaces returns the interfaces Announce and Browse use for cfg: those
// named by cfg.Iface (a comma-separated list), or every up,
// multicast-capable, non-loopback interface with a private IPv4 address.
func Interfaces(cfg Config) ([]net.Interface, error) {
	links, err := interfaces(cfg)
	if err != nil {
		return nil, err
	}
	out := make([]net.Interface, len(links))
	for i, l := range links {
		out[i] = l.ifi
	}
	return out, nil
}

// LocalAddrs returns the IPv4 addresses of the interfaces for cfg.
func LocalAddrs(cfg Config) ([]netip.Addr, error) {
	links, err := interfaces(cfg)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, l := range links {
		for _, p := range l.prefixes {
			addrs = append(addrs, p.Addr())
		}
	}
	return addrs, nil
}

// link is an interface with its IPv4 prefixes.
type link struct {
	ifi      net.Interface
	prefixes []netip.Prefix
}

func (l link) ips() []net.IP {
	ips := make([]net.IP, len(l.prefixes))
	for i, p := range l.prefixes {
		ips[i] = p.Addr().AsSlice()
	}
	return ips
}

// onLink reports whether a is in one of the link's subnets.
func (l link) onLink(a netip.Addr) bool {
	for _, p := range l.prefixes {
		if p.Masked().Contains(a) {
			return true
		}
	}
	return false
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// subnetEnd reports whether a is the network or the broadcast address of
// one of l's subnets (of those with more than two addresses): no host's.
func (l link) subnetEnd(a netip.Addr) bool {
	for _, p := range l.prefixes {
		if p.Bits() >= 31 || !p.Masked().Contains(a) {
			continue
		}
		first := p.Masked().Addr().As4()
		last := first
		host := uint32(1)<<(32-p.Bits()) - 1
		for i := range 4 {
			last[i] |= byte(host >> (8 * (3 - i)))
		}
		if a == netip.AddrFrom4(first) || a == netip.AddrFrom4(last) {
			return true
		}
	}
	return false
}

// refuse says why a peer at address a, learnt from an answer to a query sent
// out of l, must not be dialled, or "" if it may: a must be an IPv4 unicast
// address in one of l's subnets. A loopback address passes only when l is the
// loopback interface, a link-local one only when l has a link-local subnet.
func (l link) refuse(a netip.Addr) string {
	switch {
	case !a.Is4():
		return "not an IPv4 address"
	case a.IsUnspecified(), a == limitedBroadcast, l.subnetEnd(a):
		return "not a host's address"
	case a.IsMulticast():
		return "a multicast address"
	case a.IsLoopback() && l.ifi.Flags&net.FlagLoopback == 0:
		return "a loopback address, asked on " + l.ifi.Name
	case a.IsLinkLocalUnicast() && !l.onLink(a):
		return "a link-local address, and " + l.ifi.Name + " has none"
	case !l.onLink(a):
		return "outside the subnets of " + l.ifi.Name
	}
	return ""
}

func interfaces(cfg Config) ([]link, error) {
	if cfg.Iface != "" {
		var links []link
		for _, name := range strings.Split(cfg.Iface, ",") {
			name = strings.TrimSpace(name)
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return nil, fmt.Errorf("%w: no interface named %q: list interfaces with `ip -br link`",
					ErrNoInterface, name)
			}
			prefixes, err := ipv4Prefixes(ifi)
			if err != nil {
				return nil, err
			}
			if err := usable(*ifi, prefixes); err != nil {
				return nil, err
			}
			links = append(links, link{ifi: *ifi, prefixes: prefixes})
		}
		return links, nil
	}
	all, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("list network interfaces: %w", err)
	}
	var links []link
	for _, ifi := range all {
		if ifi.Flags&net.FlagLoopback != 0 {
			continue
		}
		prefixes, err := ipv4Prefixes(&ifi)
		if err != nil {
			return nil, err
		}
		// Unnamed, only a LAN's: an interface with a private address.
		if usable(ifi, prefixes) == nil && slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Addr().IsPrivate() }) {
			links = append(links, link{ifi: ifi, prefixes: prefixes})
		}
	}
	if len(links) == 0 {
		return nil, fmt.Errorf("%w: no up, multicast-capable interface has a private IPv4 address: connect to the LAN or name one with --iface",
			ErrNoInterface)
	}
	return links, nil
}

// usable says why an interface cannot carry mDNS over IPv4, or nil if it can.
func usable(ifi net.Interface, prefixes []netip.Prefix) error {
	switch {
	case ifi.Flags&net.FlagUp == 0:
		return fmt.Errorf("%w: interface %s is down: bring it up with `ip link set %s up`",
			ErrNoInterface, ifi.Name, ifi.Name)
	case ifi.Flags&net.FlagMulticast == 0:
		return fmt.Errorf("%w: interface %s has multicast off: turn it on with `ip link set %s multicast on`",
			ErrNoInterface, ifi.Name, ifi.Name)
	case len(prefixes) == 0:
		return fmt.Errorf("%w: interface %s has no IPv4 address: give it one or pick another with --iface",
			ErrNoInterface, ifi.Name)
	}
	return nil
}

func ipv4Prefixes(ifi *net.Interface) ([]netip.Prefix, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("read addresses of interface %s: %w", ifi.Name, err)
	}
	var prefixes []netip.Prefix
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.Is4() {
			continue
		}
		ones, bits := n.Mask.Size()
		if bits == 128 {
			ones -= 96
		}
		prefixes = append(prefixes, netip.PrefixFrom(ip, ones))
	}
	return prefixes, nil
}
