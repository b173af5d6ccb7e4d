package relay

import (
	"fmt"
	"net"
	"time"
)

// Config tunes sessions; seeds and receivers read the same section.
type Config struct {
	// Listen is the TCP address a receiver accepts sessions and children on.
	Listen string `toml:"listen"`
	// Heartbeat is how often an idle link carries a ping or progress frame.
	Heartbeat time.Duration `toml:"heartbeat"`
	// DeadAfter is how long a silent parent, child or node is given before it counts as dead.
	DeadAfter time.Duration `toml:"dead_after"`
	// SeedTimeout is how long a receiver waits on a silent seed before it gives up the session.
	SeedTimeout time.Duration `toml:"seed_timeout"`
	// Trees is how many trees a seed streams down at once: 1, or 2 for two
	// complementary trees, each carrying every other chunk.
	Trees int `toml:"trees"`
	// SlowAfter is the window over which relays' rates are compared; a relay
	// under a quarter of what a healthy tree delivers loses its children to
	// faster parents (see tree.checkRates).
	SlowAfter time.Duration `toml:"slow_after"`
	// DialTimeout bounds each TCP connection attempt.
	DialTimeout time.Duration `toml:"dial_timeout"`
	// SessionTTL is how long a signed session stays valid after the seed creates it.
	SessionTTL time.Duration `toml:"session_ttl"`
	// SessionGrace is how long past its expected end a session waits for
	// its slowest nodes before it fails them: past 4 × the time the first
	// node took to apply the package, or, before any did, past the time to
	// send the package at 1 Mbit/s.
	SessionGrace time.Duration `toml:"session_grace"`
	// MaxRate caps what this process sends to its children, all together
	// ("20mbit", "5MB/s"; see ParseRate), so a production line's network
	// stays usable; "" sends as fast as the links go. Each child's flow is
	// paced at an even share of it from its first byte (as it is of 97 %
	// of the link, where the link's rate can be read).
	MaxRate string `toml:"max_rate"`
	// MaxNodes is the most receivers one seed takes into a session; the
	// rest are reported as not taken.
	MaxNodes int `toml:"max_nodes"`
}

// DefaultConfig returns the settings for a switched LAN.
func DefaultConfig() Config {
	return Config{
		Listen:       ":0",                   // any free port; mDNS tells the seed which
		Heartbeat:    500 * time.Millisecond, // cheap on a LAN, and keeps detection within seconds
		DeadAfter:    4 * time.Second,        // eight missed heartbeats: dead or hung, not just busy
		SeedTimeout:  30 * time.Second,       // a seed restart or a brief outage should not end the session
		Trees:        2,                      // each node inner in one tree, leaf in the other: every uplink works
		SlowAfter:    2 * time.Second,        // long enough to smooth TCP's swings, short against a transfer
		DialTimeout:  5 * time.Second,        // a LAN host that has not answered by now is not there
		SessionTTL:   24 * time.Hour,         // long enough for the largest image, short enough to age out replays
		SessionGrace: time.Minute,            // a stalled node costs the session a minute, a slow one its time and a minute
		MaxNodes:     4096,                   // what one seed's sockets and loop serve well (README: fleet size)
	}
}

// The ranges Validate accepts. Relations between fields (DeadAfter at least
// two heartbeats, and so on) are in Validate itself.
const (
	minHeartbeat    = 10 * time.Millisecond // more often, pings and progress frames crowd out blocks and the seed's loop
	maxDeadAfter    = 10 * time.Minute      // longer, a hung relay holds its subtree for longer than most transfers take
	maxSeedTimeout  = 24 * time.Hour        // a seed gone for a day is not coming back to this session
	maxSlowAfter    = 10 * time.Minute      // longer, a slow relay is found only after the transfer is over
	minDialTimeout  = 10 * time.Millisecond // a LAN connect takes well under a millisecond; shorter fails on a loaded host
	maxDialTimeout  = time.Minute           // a host that has not answered by then is not there; longer only delays repairs
	minSessionTTL   = time.Minute           // shorter, a session expires while receivers are still being offered it
	maxSessionTTL   = 366 * 24 * time.Hour  // a signed session valid for more than a year is a replay waiting to happen
	minSessionGrace = time.Second           // shorter, a node's last progress report may not have arrived
	maxSessionGrace = 24 * time.Hour        // a session that may run a day late has no end worth the name
	maxMaxNodes     = 1 << 20               // a node id is an index; past a million, one seed is the wrong tool
)

// A ConfigError is a Config field set outside the range it accepts.
type ConfigError struct {
	Field string   // the field as Config names it, e.g. "Heartbeat"
	Value any      // the value it holds
	Want  string   // the range it accepts, e.g. "at least 10ms and at most half of DeadAfter (4s)"
	Refs  []string // the other fields Want names, so a caller can call them what its users know them as
}

func (e *ConfigError) Error() string {
	if s, ok := e.Value.(string); ok {
		return fmt.Sprintf("%s %q: want %s", e.Field, s, e.Want)
	}
	return fmt.Sprintf("%s %v: want %s", e.Field, e.Value, e.Want)
}

// Validate reports the first field outside its range as a *ConfigError.
// NewReceiver and RunSeed refuse a Config that does not validate.
func (c Config) Validate() error {
	bad := func(field string, value any, want string, refs ...string) error {
		return &ConfigError{Field: field, Value: value, Want: want, Refs: refs}
	}
	if _, port, err := net.SplitHostPort(c.Listen); err != nil || port == "" {
		return bad("Listen", c.Listen, "a TCP address host:port, such as :0 (any free port) or 10.0.0.5:7070")
	} else if _, err := net.LookupPort("tcp", port); err != nil {
		return bad("Listen", c.Listen, "a TCP address host:port whose port is a number from 0 to 65535")
	}
	if c.DeadAfter < 2*minHeartbeat || c.DeadAfter > maxDeadAfter {
		return bad("DeadAfter", c.DeadAfter, fmt.Sprintf("from %s to %s", 2*minHeartbeat, maxDeadAfter))
	}
	if c.Heartbeat < minHeartbeat || c.Heartbeat > c.DeadAfter/2 {
		return bad("Heartbeat", c.Heartbeat, fmt.Sprintf("from %s to half of DeadAfter (%s): a link must miss two heartbeats before it counts as dead", minHeartbeat, c.DeadAfter), "DeadAfter")
	}
	if c.SeedTimeout < c.DeadAfter || c.SeedTimeout > maxSeedTimeout {
		return bad("SeedTimeout", c.SeedTimeout, fmt.Sprintf("from DeadAfter (%s) to %s: a seed is not given up on sooner than any other peer", c.DeadAfter, maxSeedTimeout), "DeadAfter")
	}
	if c.Trees < 1 || c.Trees > maxStripes {
		return bad("Trees", c.Trees, fmt.Sprintf("1 (one binary tree) or %d (two complementary trees)", maxStripes))
	}
	if c.SlowAfter < 2*c.Heartbeat || c.SlowAfter > maxSlowAfter {
		return bad("SlowAfter", c.SlowAfter, fmt.Sprintf("from twice Heartbeat (%s) to %s: rates are compared over at least two progress reports", 2*c.Heartbeat, maxSlowAfter), "Heartbeat")
	}
	if c.DialTimeout < minDialTimeout || c.DialTimeout > maxDialTimeout {
		return bad("DialTimeout", c.DialTimeout, fmt.Sprintf("from %s to %s", minDialTimeout, maxDialTimeout))
	}
	if c.SessionTTL < minSessionTTL || c.SessionTTL > maxSessionTTL {
		return bad("SessionTTL", c.SessionTTL, fmt.Sprintf("from %s to %s", minSessionTTL, maxSessionTTL))
	}
	if c.SessionGrace < minSessionGrace || c.SessionGrace > maxSessionGrace {
		return bad("SessionGrace", c.SessionGrace, fmt.Sprintf("from %s to %s", minSessionGrace, maxSessionGrace))
	}
	if _, err := ParseRate(c.MaxRate); err != nil {
		return bad("MaxRate", c.MaxRate, "empty (no cap), or a rate such as 20mbit, 1.5gbit, 5MB/s or 2MiB/s")
	}
	if c.MaxNodes < 1 || c.MaxNodes > maxMaxNodes {
		return bad("MaxNodes", c.MaxNodes, fmt.Sprintf("from 1 to %d", maxMaxNodes))
	}
	return nil
}
