package discover

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// States a receiver announces.
const (
	StateIdle = "idle" // ready to join a session
	StateBusy = "busy" // in a session or applying a package
)

const (
	maxTXTString  = 255 // a DNS character-string carries a one-byte length
	maxTXTStrings = 32  // more than any version needs; bounds the work per peer
	idLen         = 32  // hex digits of a 128-bit node id
	maxVersionLen = 9   // digits; keeps the version well inside an int32
	maxLabelName  = 63 - 1 - 8
)

// TXT keys.
const (
	keyVersion = "v"
	keyID      = "id"
	keyName    = "name"
	keyGroup   = "group"
	keyState   = "state"
)

// txtFields is what a TXT record says about a receiver.
type txtFields struct {
	Version int
	ID      string
	Name    string
	Group   string
	State   string
}

// encodeTXT validates a and returns its TXT strings.
func encodeTXT(a Announcement) ([]string, error) {
	if a.Version < 1 {
		return nil, fmt.Errorf("protocol version %d: it must be 1 or more", a.Version)
	}
	if !validID(a.ID) {
		return nil, fmt.Errorf("node id %q: it must be %d lowercase hex digits", a.ID, idLen)
	}
	if a.Name == "" {
		return nil, errors.New("name is empty: give the receiver a name")
	}
	if err := checkState(a.State); err != nil {
		return nil, err
	}
	txt := []string{
		keyVersion + "=" + strconv.Itoa(a.Version),
		keyID + "=" + a.ID,
	}
	for _, kv := range []struct{ key, value string }{
		{keyName, a.Name},
		{keyGroup, a.Group},
		{keyState, a.State},
	} {
		if kv.value == "" {
			continue
		}
		if err := checkText(kv.value); err != nil {
			return nil, fmt.Errorf("%s %q: %w", kv.key, kv.value, err)
		}
		s := kv.key + "=" + kv.value
		if len(s) > maxTXTString {
			return nil, fmt.Errorf("%s is %d bytes; mDNS carries at most %d: shorten it",
				kv.key, len(kv.value), maxTXTString-len(kv.key)-1)
		}
		txt = append(txt, s)
	}
	return txt, nil
}

// parseTXT reads the TXT strings of a peer. It needs v and id and ignores
// what it does not know.
func parseTXT(txt []string) (txtFields, error) {
	var f txtFields
	var seen [5]bool
	keys := [...]string{keyVersion, keyID, keyName, keyGroup, keyState}
	for i, s := range txt {
		if i == maxTXTStrings {
			break
		}
		if len(s) > maxTXTString {
			continue
		}
		key, value, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		k := -1
		for j, name := range keys {
			if strings.EqualFold(key, name) {
				k = j
				break
			}
		}
		if k < 0 || seen[k] {
			continue
		}
		seen[k] = true
		switch keys[k] {
		case keyVersion:
			v, err := parseVersion(value)
			if err != nil {
				return txtFields{}, err
			}
			f.Version = v
		case keyID:
			if !validID(value) {
				return txtFields{}, fmt.Errorf("node id %q is not %d lowercase hex digits", value, idLen)
			}
			f.ID = value
		default:
			if err := checkText(value); err != nil {
				return txtFields{}, fmt.Errorf("%s %q: %w", keys[k], value, err)
			}
			switch keys[k] {
			case keyName:
				f.Name = value
			case keyGroup:
				f.Group = value
			case keyState:
				f.State = value
			}
		}
	}
	if f.Version == 0 {
		return txtFields{}, errors.New("no protocol version (v=)")
	}
	if f.ID == "" {
		return txtFields{}, errors.New("no node id (id=)")
	}
	return f, nil
}

func parseVersion(s string) (int, error) {
	if s == "" || len(s) > maxVersionLen || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("protocol version %q is not a decimal number", s)
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("protocol version %q must be 1 or more", s)
	}
	return v, nil
}

func validID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkText accepts UTF-8 without control characters.
func checkText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("holds the control character %U", r)
		}
	}
	return nil
}

func checkState(s string) error {
	if s != StateIdle && s != StateBusy {
		return fmt.Errorf("state %q: it must be %q or %q", s, StateIdle, StateBusy)
	}
	return nil
}

// instanceName is the DNS-SD instance label for a node: the name reduced to
// letters, digits and '-', then '-' and the first 8 hex digits of the id.
func instanceName(name, id string) string {
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < maxLabelName; {
		r, size := utf8.DecodeRuneInString(name[i:])
		i += size
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	label := b.String()
	if label == "" {
		label = "treecast"
	}
	return label + "-" + id[:8]
}
