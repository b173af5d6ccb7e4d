package discover

import (
	"fmt"
	"log"
	"log/slog"
	"time"
)

// Service is the DNS-SD service type receivers announce.
const Service = "_treecast._tcp"

const (
	serviceName    = Service + ".local."
	instanceSuffix = "." + serviceName
)

// Config selects where discovery runs and how it asks.
type Config struct {
	// Iface names the interfaces to announce and browse on, separated by
	// commas; "" means every up, multicast-capable, non-loopback interface
	// with a private IPv4 address (a LAN's, not the internet's).
	Iface string `toml:"iface"`
	// Round is how long one browse query listens for answers before the next
	// query goes out.
	Round time.Duration `toml:"round"`
}

// DefaultConfig returns the settings for a switched LAN.
func DefaultConfig() Config {
	return Config{
		Iface: "",                     // a plain LAN works without naming the interface
		Round: 500 * time.Millisecond, // enough for 128 answers in the lab; a lost packet costs half a second
	}
}

// The range Validate accepts for Round.
const (
	minRound = 50 * time.Millisecond // a busy host's answer takes tens of milliseconds; a shorter round misses it
	maxRound = time.Minute           // a round is one query: longer only delays the next query after a lost packet
)

// A ConfigError is a Config field set outside the range it accepts.
type ConfigError struct {
	Field string // the field as Config names it, e.g. "Round"
	Value any    // the value it holds
	Want  string // the range it accepts
}

func (e *ConfigError) Error() string {
	if s, ok := e.Value.(string); ok {
		return fmt.Sprintf("%s %q: want %s", e.Field, s, e.Want)
	}
	return fmt.Sprintf("%s %v: want %s", e.Field, e.Value, e.Want)
}

// Validate reports the first field outside its range as a *ConfigError.
// Whether Iface exists is known only when discovery starts (IsNoInterface).
func (c Config) Validate() error {
	if c.Round < minRound || c.Round > maxRound {
		return &ConfigError{Field: "Round", Value: c.Round, Want: fmt.Sprintf("from %s to %s", minRound, maxRound)}
	}
	return nil
}

// round is Round, or its default for a zero Config built in code.
func (c Config) round() time.Duration {
	if c.Round <= 0 {
		return DefaultConfig().Round
	}
	return c.Round
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// libLogger routes the mdns library's log lines to l at debug level.
func libLogger(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.With("lib", "mdns").Handler(), slog.LevelDebug)
}
