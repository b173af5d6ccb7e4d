package relay

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// rateCap bounds what one process sends to all its children together: a
// token bucket of capBurst bytes filled at rate bytes per second. A nil
// *rateCap lets everything through.
type rateCap struct {
	rate float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// capBurst is what may go at once: a few blocks, so a cap of a few Mbit/s
// still sends whole writes.
const capBurst = 64 << 10

func newRateCap(bytesPerSecond int64) *rateCap {
	if bytesPerSecond <= 0 {
		return nil
	}
	return &rateCap{rate: float64(bytesPerSecond), tokens: capBurst, last: time.Now()}
}

// bytesPerSecond is the cap's rate; 0: no cap.
func (c *rateCap) bytesPerSecond() int64 {
	if c == nil {
		return 0
	}
	return int64(c.rate)
}

// wait blocks until n bytes may be sent, or ctx ends.
func (c *rateCap) wait(ctx context.Context, n int) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	now := time.Now()
	c.tokens = min(capBurst, c.tokens+now.Sub(c.last).Seconds()*c.rate)
	c.last = now
	c.tokens -= float64(n) // may go below zero: the debt is waited for here
	var d time.Duration
	if c.tokens < 0 {
		d = time.Duration(-c.tokens / c.rate * float64(time.Second))
	}
	c.mu.Unlock()
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ParseRate reads a rate in bits per second ("20mbit", "1.5Gbit/s",
// "800kbit") or bytes per second ("5MB/s", "2MiB/s", "500KB/s"), and
// returns bytes per second; "" and "0" are no cap.
func ParseRate(s string) (int64, error) {
	v := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	if v == "" || v == "0" {
		return 0, nil
	}
	i := 0
	for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '.') {
		i++
	}
	n, err := strconv.ParseFloat(v[:i], 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("rate %q: want a positive number and a unit, such as 20mbit, 1.5gbit, 5MB/s or 2MiB/s", s)
	}
	units := map[string]float64{
		"bit": 1.0 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
		"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	}
	unit, ok := units[strings.ToLower(v[i:])]
	if !ok {
		return 0, fmt.Errorf("rate %q: unknown unit %q; use bit, kbit, mbit, gbit (bits per second) or B, KB, MB, GB, KiB, MiB, GiB (bytes per second)", s, v[i:])
	}
	if b := n * unit; b >= 1 {
		return int64(b), nil
	}
	return 0, fmt.Errorf("rate %q: under one byte per second", s)
}
