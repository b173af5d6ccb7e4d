package relay

import "time"

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
	// at a quarter of the median rate loses its children to faster parents.
	SlowAfter time.Duration `toml:"slow_after"`
	// DialTimeout bounds each TCP connection attempt.
	DialTimeout time.Duration `toml:"dial_timeout"`
	// SessionTTL is how long a signed session stays valid after the seed creates it.
	SessionTTL time.Duration `toml:"session_ttl"`
	// MaxNodes is the most receivers one seed takes into a session; the
	// rest are reported as not taken.
	MaxNodes int `toml:"max_nodes"`
}

// DefaultConfig returns the settings for a switched LAN.
func DefaultConfig() Config {
	return Config{
		Listen:      ":0",                   // any free port; mDNS tells the seed which
		Heartbeat:   500 * time.Millisecond, // cheap on a LAN, and keeps detection within seconds
		DeadAfter:   4 * time.Second,        // eight missed heartbeats: dead or hung, not just busy
		SeedTimeout: 30 * time.Second,       // a seed restart or a brief outage should not end the session
		Trees:       2,                      // each node inner in one tree, leaf in the other: every uplink works
		SlowAfter:   2 * time.Second,        // long enough to smooth TCP's swings, short against a transfer
		DialTimeout: 5 * time.Second,        // a LAN host that has not answered by now is not there
		SessionTTL:  24 * time.Hour,         // long enough for the largest image, short enough to age out replays
		MaxNodes:    4096,                   // what one seed's sockets and loop serve well (README: fleet size)
	}
}
