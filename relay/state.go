package relay

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// applied is what a receiver remembers of the last session it applied from
// one seed key for one group: enough to refuse a replay or an older
// session, whatever the package is called, and to know a package that is
// applied already. A release line is the key and the group, not the file
// name, so renaming app-2.4 to anything does not make it newer than app-2.5.
type applied struct {
	Session string    `json:"session"`
	Created time.Time `json:"created"`
	Name    string    `json:"name"`
	SHA256  string    `json:"sha256"`
	// Actions is the fingerprint of what the receiver did with the package
	// (ReceiverOptions.Actions); a record without it is up to date with
	// nothing, so the next session of its package is applied.
	Actions string `json:"actions,omitempty"`
}

func appliedPath(dir string) string { return filepath.Join(dir, appliedName) }

// lineOf names the release line a signed session belongs to.
func lineOf(s *Signed) string {
	return fmt.Sprintf("key %s group %q", Fingerprint(s.Key), s.Manifest.Group)
}

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

// recordApplied notes that s was applied here with actions, or found up to
// date: either way, s is the last session of its line.
func recordApplied(dir string, s *Signed, actions string) error {
	recs, err := loadApplied(dir)
	if err != nil {
		return err
	}
	m := s.Manifest
	recs[lineOf(s)] = applied{Session: fmt.Sprintf("%x", m.Session), Created: m.Created.UTC(), Name: m.Name, SHA256: m.SumHex(), Actions: actions}
	return saveApplied(dir, recs)
}

// saveApplied replaces what the receiver remembers with recs.
func saveApplied(dir string, recs map[string]applied) error {
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return writeStateFile(appliedPath(dir), b)
}

// recordChanging notes that s is about to change what its line applied
// here (a write target written, a stream or an apply begun): until it is
// applied, nothing of the line counts as applied or up to date, since what
// was applied may be half overwritten. The last session's creation time
// stays, for the rule against older ones.
func recordChanging(dir string, s *Signed) error {
	recs, err := loadApplied(dir)
	if err != nil {
		return err
	}
	prev, ok := recs[lineOf(s)]
	if !ok || prev.Session == "" && prev.Actions == "" {
		return nil
	}
	prev.Session, prev.Actions = "", ""
	recs[lineOf(s)] = prev
	return saveApplied(dir, recs)
}

// errApplied means the offer is the very session applied here last: it is
// answered "applied" without a byte sent or anything run again.
var errApplied = errors.New("this session was applied here already")

// errUpToDate means the offer is a new session of the package applied here
// last, under the same name and with the same actions, and does not force
// it: it is answered "up to date" without a byte sent or anything run.
var errUpToDate = errors.New("this package was applied here already with the same actions")

// checkApplied holds an offer to what was applied here last from the same
// key for the same group. It refuses a session created before that one,
// unless allowOlder; it returns errApplied for that very session, and
// errUpToDate for a newer one of the same package that does not force it.
// The rollback rule comes first: an older session is refused even when its
// package is the one in place.
func checkApplied(dir string, s *Signed, allowOlder bool, actions string) error {
	recs, err := loadApplied(dir)
	if err != nil {
		return err
	}
	m := s.Manifest
	prev, ok := recs[lineOf(s)]
	switch {
	case !ok:
		return nil
	case prev.Session == fmt.Sprintf("%x", m.Session):
		return errApplied
	case m.Created.Before(prev.Created) && !allowOlder:
		const stamp = "2006-01-02T15:04:05.000Z07:00"
		return fmt.Errorf("%s (created %s) is older than %s (created %s), applied here from the same seed key for the same group: refusing a downgrade or a replay (allow it with --allow-downgrade)",
			m.Name, m.Created.UTC().Format(stamp), prev.Name, prev.Created.Format(stamp))
	case !m.Force && prev.SHA256 == m.SumHex() && prev.Name == m.Name && prev.Actions != "" && prev.Actions == actions:
		return errUpToDate
	}
	return nil
}
