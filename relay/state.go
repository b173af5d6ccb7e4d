package relay

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// applied is what a receiver remembers of the last session it applied for
// each package name: enough to refuse a replay or an older release.
type applied struct {
	Session string    `json:"session"`
	Created time.Time `json:"created"`
	SHA256  string    `json:"sha256"`
}

func appliedPath(dir string) string { return filepath.Join(dir, appliedName) }

func loadApplied(dir string) (map[string]applied, error) {
	b, err := os.ReadFile(appliedPath(dir))
	if os.IsNotExist(err) {
		return map[string]applied{}, nil
	}
	if err != nil {
		return nil, err
	}
	recs := map[string]applied{}
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("%s: %w (remove it to forget what was applied)", appliedPath(dir), err)
	}
	return recs, nil
}

// recordApplied notes that m was applied here.
func recordApplied(dir string, m *Manifest) error {
	recs, err := loadApplied(dir)
	if err != nil {
		return err
	}
	recs[m.Name] = applied{Session: fmt.Sprintf("%x", m.Session), Created: m.Created.UTC(), SHA256: m.SumHex()}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return writeStateFile(appliedPath(dir), b)
}

// checkRollback refuses a session that replays one applied here, or that
// was created before the one applied here for the same package name.
func checkRollback(dir string, m *Manifest) error {
	recs, err := loadApplied(dir)
	if err != nil {
		return err
	}
	prev, ok := recs[m.Name]
	switch {
	case !ok:
		return nil
	case prev.Session == fmt.Sprintf("%x", m.Session):
		return fmt.Errorf("session %x for %s was already applied here on %s: a replay", m.Session[:4], m.Name, prev.Created.Format(time.RFC3339))
	case m.Created.Before(prev.Created):
		const stamp = "2006-01-02T15:04:05.000Z07:00"
		return fmt.Errorf("%s from %s is older than the one applied here (created %s): refusing a downgrade (allow it with --allow-downgrade)",
			m.Name, m.Created.UTC().Format(stamp), prev.Created.Format(stamp))
	}
	return nil
}
