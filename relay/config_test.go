package relay

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name  string
		set   func(*Config)
		field string // "" when the Config is valid
		want  string // in the error: the range
	}{
		{"defaults", func(*Config) {}, "", ""},
		{"the test settings", func(c *Config) { *c = testConfig() }, "", ""},

		{"listen any port", func(c *Config) { c.Listen = ":0" }, "", ""},
		{"listen address and port", func(c *Config) { c.Listen = "10.0.0.5:7070" }, "", ""},
		{"listen IPv6", func(c *Config) { c.Listen = "[::1]:7070" }, "", ""},
		{"listen empty", func(c *Config) { c.Listen = "" }, "Listen", "host:port"},
		{"listen without port", func(c *Config) { c.Listen = "10.0.0.5" }, "Listen", "host:port"},
		{"listen empty port", func(c *Config) { c.Listen = "10.0.0.5:" }, "Listen", "host:port"},
		{"listen port too large", func(c *Config) { c.Listen = ":65536" }, "Listen", "0 to 65535"},
		{"listen port negative", func(c *Config) { c.Listen = ":-1" }, "Listen", "0 to 65535"},

		{"heartbeat zero", func(c *Config) { c.Heartbeat = 0 }, "Heartbeat", "from 10ms to half of DeadAfter (4s)"},
		{"heartbeat negative", func(c *Config) { c.Heartbeat = -time.Second }, "Heartbeat", "from 10ms"},
		{"heartbeat under the least", func(c *Config) { c.Heartbeat = 9 * ms }, "Heartbeat", "from 10ms"},
		{"heartbeat the least", func(c *Config) { c.Heartbeat = 10 * ms; c.SlowAfter = 20 * ms }, "", ""},
		{"heartbeat half of dead_after", func(c *Config) { c.Heartbeat = 2 * time.Second; c.SlowAfter = 4 * time.Second }, "", ""},
		{"heartbeat over half of dead_after", func(c *Config) { c.Heartbeat = 2*time.Second + ms; c.SlowAfter = 5 * time.Second }, "Heartbeat", "half of DeadAfter (4s)"},
		{"heartbeat equal to dead_after", func(c *Config) { c.Heartbeat = 4 * time.Second }, "Heartbeat", "half of DeadAfter"},

		{"dead_after zero", func(c *Config) { c.DeadAfter = 0 }, "DeadAfter", "from 20ms to 10m0s"},
		{"dead_after under the least", func(c *Config) { c.DeadAfter = 19 * ms }, "DeadAfter", "from 20ms"},
		{"dead_after the least", func(c *Config) {
			c.DeadAfter = 20 * ms
			c.Heartbeat = 10 * ms
			c.SeedTimeout = 20 * ms
			c.SlowAfter = 20 * ms
		}, "", ""},
		{"dead_after the most", func(c *Config) { c.DeadAfter = 10 * time.Minute; c.SeedTimeout = 10 * time.Minute }, "", ""},
		{"dead_after over the most", func(c *Config) { c.DeadAfter = 10*time.Minute + ms; c.SeedTimeout = time.Hour }, "DeadAfter", "to 10m0s"},
		{"dead_after under two heartbeats", func(c *Config) { c.DeadAfter = 900 * ms }, "Heartbeat", "half of DeadAfter (900ms)"},

		{"seed_timeout zero", func(c *Config) { c.SeedTimeout = 0 }, "SeedTimeout", "from DeadAfter (4s) to 24h0m0s"},
		{"seed_timeout under dead_after", func(c *Config) { c.SeedTimeout = 4*time.Second - ms }, "SeedTimeout", "from DeadAfter (4s)"},
		{"seed_timeout equal to dead_after", func(c *Config) { c.SeedTimeout = 4 * time.Second }, "", ""},
		{"seed_timeout the most", func(c *Config) { c.SeedTimeout = 24 * time.Hour }, "", ""},
		{"seed_timeout over the most", func(c *Config) { c.SeedTimeout = 24*time.Hour + ms }, "SeedTimeout", "to 24h0m0s"},

		{"trees 0", func(c *Config) { c.Trees = 0 }, "Trees", "1 (one binary tree) or 2"},
		{"trees -1", func(c *Config) { c.Trees = -1 }, "Trees", "1 (one binary tree) or 2"},
		{"trees 1", func(c *Config) { c.Trees = 1 }, "", ""},
		{"trees 2", func(c *Config) { c.Trees = 2 }, "", ""},
		{"trees 3", func(c *Config) { c.Trees = 3 }, "Trees", "1 (one binary tree) or 2"},

		{"slow_after zero", func(c *Config) { c.SlowAfter = 0 }, "SlowAfter", "from twice Heartbeat (1s) to 10m0s"},
		{"slow_after under two heartbeats", func(c *Config) { c.SlowAfter = time.Second - ms }, "SlowAfter", "twice Heartbeat (1s)"},
		{"slow_after two heartbeats", func(c *Config) { c.SlowAfter = time.Second }, "", ""},
		{"slow_after the most", func(c *Config) { c.SlowAfter = 10 * time.Minute }, "", ""},
		{"slow_after over the most", func(c *Config) { c.SlowAfter = 10*time.Minute + ms }, "SlowAfter", "to 10m0s"},

		{"dial_timeout zero", func(c *Config) { c.DialTimeout = 0 }, "DialTimeout", "from 10ms to 1m0s"},
		{"dial_timeout under the least", func(c *Config) { c.DialTimeout = 9 * ms }, "DialTimeout", "from 10ms"},
		{"dial_timeout the least", func(c *Config) { c.DialTimeout = 10 * ms }, "", ""},
		{"dial_timeout the most", func(c *Config) { c.DialTimeout = time.Minute }, "", ""},
		{"dial_timeout over the most", func(c *Config) { c.DialTimeout = time.Minute + ms }, "DialTimeout", "to 1m0s"},

		{"session_ttl zero", func(c *Config) { c.SessionTTL = 0 }, "SessionTTL", "from 1m0s to 8784h0m0s"},
		{"session_ttl under the least", func(c *Config) { c.SessionTTL = time.Minute - ms }, "SessionTTL", "from 1m0s"},
		{"session_ttl the least", func(c *Config) { c.SessionTTL = time.Minute }, "", ""},
		{"session_ttl the most", func(c *Config) { c.SessionTTL = 366 * 24 * time.Hour }, "", ""},
		{"session_ttl over the most", func(c *Config) { c.SessionTTL = 366*24*time.Hour + ms }, "SessionTTL", "to 8784h0m0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.set(&cfg)
			err := cfg.Validate()
			if tc.field == "" {
				if err != nil {
					t.Fatalf("%+v refused: %v", cfg, err)
				}
				return
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("%+v: error %v, want a *ConfigError", cfg, err)
			}
			if ce.Field != tc.field || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), tc.field+" ") {
				t.Errorf("error %q (field %s), want field %s and a range with %q", err, ce.Field, tc.field, tc.want)
			}
			for _, ref := range ce.Refs {
				if !strings.Contains(ce.Want, ref) {
					t.Errorf("Refs names %s, which Want %q does not mention", ref, ce.Want)
				}
			}
		})
	}
}

// A zero heartbeat once panicked the receiver and the seed (a ticker of 0).
func TestZeroHeartbeatIsRefusedNotAPanic(t *testing.T) {
	cfg := testConfig()
	cfg.Heartbeat = 0
	apply := func(context.Context, Package) error { return nil }
	if r, err := NewReceiver(cfg, ReceiverOptions{Dir: t.TempDir(), Apply: apply}); err == nil {
		r.Close()
		t.Errorf("NewReceiver accepted a zero heartbeat")
	} else if !strings.Contains(err.Error(), "Heartbeat") {
		t.Errorf("NewReceiver: %v, want the error to name Heartbeat", err)
	}
	if _, err := RunSeed(context.Background(), cfg, SeedOptions{}); err == nil || !strings.Contains(err.Error(), "Heartbeat") {
		t.Errorf("RunSeed: %v, want the error to name Heartbeat", err)
	}
}
