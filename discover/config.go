package discover

import (
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
	// Iface names the one interface to announce and browse on; "" means every
	// up, multicast-capable, non-loopback interface with an IPv4 address.
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
