package discover

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		round time.Duration
		ok    bool
	}{
		{DefaultConfig().Round, true},
		{0, false},
		{-time.Second, false},
		{49 * time.Millisecond, false},
		{50 * time.Millisecond, true},
		{time.Minute, true},
		{time.Minute + time.Millisecond, false},
	} {
		cfg := DefaultConfig()
		cfg.Round = tc.round
		err := cfg.Validate()
		if tc.ok {
			if err != nil {
				t.Errorf("Round %s refused: %v", tc.round, err)
			}
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != "Round" || !strings.Contains(err.Error(), "from 50ms to 1m0s") {
			t.Errorf("Round %s: error %v, want a *ConfigError for Round with its range 50ms to 1m0s", tc.round, err)
		}
	}
}
