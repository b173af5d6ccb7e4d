package main

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"

	"github.com/treecast/treecast/discover"
	"github.com/treecast/treecast/install"
	"github.com/treecast/treecast/relay"
)

// fileConfig is the TOML file; config.example.toml documents every key.
type fileConfig struct {
	Seed     seedConfig      `toml:"seed"`
	Receiver receiverConfig  `toml:"receiver"`
	Install  install.Config  `toml:"install"`
	Discover discover.Config `toml:"discover"`
	Relay    relay.Config    `toml:"relay"`
}

type seedConfig struct {
	Expect    int           `toml:"expect"`
	Wait      time.Duration `toml:"wait"`
	Group     string        `toml:"group"`
	ChunkSize string        `toml:"chunk_size"`
	Key       string        `toml:"key"`
	Secret    string        `toml:"secret"`
	Compress  string        `toml:"compress"`
	Report    string        `toml:"report"`
	Peers     []string      `toml:"peers"`      // receivers by address, HOST:PORT
	PeersFile string        `toml:"peers_file"` // a file of them, one a line
}

type receiverConfig struct {
	Name     string        `toml:"name"`
	Group    string        `toml:"group"`
	Dir      string        `toml:"dir"`
	Timeout  time.Duration `toml:"timeout"`
	Trust    []string      `toml:"trust"`
	TrustAny bool          `toml:"trust_any"`
	// AllowDowngrade accepts a session older than the last one applied
	// here from the same seed key for the same group.
	AllowDowngrade bool   `toml:"allow_downgrade"`
	Secret         string `toml:"secret"`
	Write          string `toml:"write"`
}

func defaultConfig() fileConfig {
	return fileConfig{
		Seed: seedConfig{
			Wait:      10 * time.Second, // long enough for a whole LAN to answer a few query rounds
			ChunkSize: "1MiB",           // small enough to pipeline, large enough that headers cost nothing
			Compress:  "on",             // text, binaries and disk images shrink; what does not is found cheaply
			Peers:     []string{},       // mDNS finds them
		},
		Receiver: receiverConfig{Trust: []string{}}, // trust nobody until told
		Install:  install.DefaultConfig(),
		Discover: discover.DefaultConfig(),
		Relay:    relay.DefaultConfig(),
	}
}

// settings is one command's configuration and where each value came from,
// so that a bad value is named as the person set it: by its flag, or by its
// key in the --config file.
type settings struct {
	fileConfig
	path  string            // the --config file; "" for none
	md    toml.MetaData     // the keys the file sets
	flags map[string]string // key ("relay.listen") -> the flag that set it
}

// loadConfig reads the --config file over the defaults, strictly: unknown
// keys and syntax errors name the key or line. Values are checked by
// settings.check, once the flags are in.
func loadConfig(c *cli.Context) (*settings, error) {
	s := &settings{fileConfig: defaultConfig(), path: c.String("config"), flags: map[string]string{}}
	if s.path == "" {
		return s, nil
	}
	md, err := toml.DecodeFile(s.path, &s.fileConfig)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, usage("config %s: %s", s.path, pe.ErrorWithPosition())
		}
		return nil, usage("config %s: %v", s.path, err)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		var names []string
		for _, k := range keys {
			names = append(names, k.String())
		}
		return nil, usage("config %s: unknown key %s (see config.example.toml for every key)", s.path, strings.Join(names, ", "))
	}
	s.md = md
	return s, nil
}

// fromFlag sets *dst, the setting key, to the value of flag when the flag or
// its TREECAST_* variable is set: flags win over the file.
func fromFlag[T any](s *settings, c *cli.Context, flag, key string, dst *T, get func(name string) T) {
	if c.IsSet(flag) {
		*dst = get(flag)
		s.flags[key] = flag
	}
}

// name is what the person knows setting key ("relay.dead_after") as: its
// flag when one set it, else its place in the file, "[relay] dead_after".
func (s *settings) name(key string) string {
	if f, ok := s.flags[key]; ok {
		return "--" + f
	}
	section, k, _ := strings.Cut(key, ".")
	return fmt.Sprintf("[%s] %s", section, k)
}

// invalid is the usage error of cmd for setting key, which holds value and
// accepts want. refs maps the words of want that name other settings (a
// package's field names) to their keys.
func (s *settings) invalid(cmd, key string, value any, want string, refs map[string]string) error {
	for word, ref := range refs {
		want = strings.ReplaceAll(want, word, s.name(ref))
	}
	if f, ok := s.flags[key]; ok {
		v := fmt.Sprint(value)
		if str, ok := value.(string); ok {
			v = strconv.Quote(str)
		}
		return usage("%s: --%s %s: want %s", cmd, f, v, want)
	}
	section, k, _ := strings.Cut(key, ".")
	v := fmt.Sprint(value)
	switch value := value.(type) {
	case string:
		v = strconv.Quote(value)
	case time.Duration:
		v = strconv.Quote(value.String())
	}
	setting := fmt.Sprintf("%s = %s", s.name(key), v)
	if s.path == "" {
		return usage("%s: %s: want %s", cmd, setting, want)
	}
	if !s.md.IsDefined(section, k) {
		setting += " (the default)"
	}
	return usage("%s: config %s: %s: want %s", cmd, s.path, setting, want)
}

// fieldError is invalid for the field of a package's Config, whose TOML
// section is section; refs are other fields of it.
func (s *settings) fieldError(cmd, section string, cfg any, field string, value any, want string, refs []string) error {
	t := reflect.TypeOf(cfg)
	key := func(field string) string {
		f, ok := t.FieldByName(field)
		if !ok {
			return section + "." + field
		}
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		return section + "." + tag
	}
	named := map[string]string{}
	for _, r := range refs {
		named[r] = key(r)
	}
	return s.invalid(cmd, key(field), value, want, named)
}

// The checks of each section of the file, with the flags in: a value out of
// range is a usage error of cmd naming the flag or key that set it. A
// command runs the checks of the sections it uses.

func (s *settings) checkRelay(cmd string) error {
	err := s.Relay.Validate()
	if ce := (*relay.ConfigError)(nil); errors.As(err, &ce) {
		return s.fieldError(cmd, "relay", s.Relay, ce.Field, ce.Value, ce.Want, ce.Refs)
	}
	return err
}

func (s *settings) checkDiscover(cmd string) error {
	err := s.Discover.Validate()
	if ce := (*discover.ConfigError)(nil); errors.As(err, &ce) {
		return s.fieldError(cmd, "discover", s.Discover, ce.Field, ce.Value, ce.Want, nil)
	}
	return err
}

func (s *settings) checkReceiver(cmd string) error {
	if s.Receiver.Timeout < 0 {
		return s.invalid(cmd, "receiver.timeout", s.Receiver.Timeout, "0s (wait forever) or longer", nil)
	}
	return nil
}

func (s *settings) checkSeed(cmd string) error {
	sc := &s.Seed
	if sc.Expect < 0 || sc.Expect > s.Relay.MaxNodes {
		return s.invalid(cmd, "seed.expect", sc.Expect, fmt.Sprintf("0 (start with the receivers found within wait) or more receivers, up to MaxNodes (%d), the most one session takes", s.Relay.MaxNodes),
			map[string]string{"MaxNodes": "relay.max_nodes"})
	}
	if sc.Wait < 0 {
		return s.invalid(cmd, "seed.wait", sc.Wait, "0s (one query round) or longer", nil)
	}
	if _, err := chunkSize(sc.ChunkSize); err != nil {
		return s.invalid(cmd, "seed.chunk_size", sc.ChunkSize, err.Error(), nil)
	}
	if sc.Compress != "on" && sc.Compress != "off" {
		return s.invalid(cmd, "seed.compress", sc.Compress, `"on" (blocks that shrink travel compressed) or "off"`, nil)
	}
	return nil
}

// chunkSize parses a chunk size; its error says the sizes it accepts.
func chunkSize(v string) (int, error) {
	const want = "a size from 4KiB to 16MiB, a multiple of 4KiB, such as 1MiB or 256KiB"
	n, err := parseSize(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s; sizes are %s", want, sizeForms)
	case n < relay.MinChunkSize || n > relay.MaxChunkSize || n%relay.MinBlockSize != 0:
		return 0, fmt.Errorf("%s (%s is %d bytes)", want, strings.TrimSpace(v), n)
	}
	return int(n), nil
}

func (s *settings) checkInstall(cmd string) error {
	err := s.Install.Validate()
	var ce *install.ConfigError
	switch {
	case s.Receiver.Write != "" && (s.Install.To != "" || s.Install.Extract != ""):
		return usage("%s: %s writes the package straight to %s and keeps no file of it, so there is nothing for %s to place or unpack: give one or the other (--exec may run after --write, with TREECAST_FILE the target)",
			cmd, s.name("receiver.write"), s.Receiver.Write, map[bool]string{true: s.name("install.to"), false: s.name("install.extract")}[s.Install.To != ""])
	case errors.Is(err, install.ErrNothingToApply) && s.Receiver.Write != "":
		return nil
	case errors.Is(err, install.ErrNothingToApply):
		return usage("%s: nothing to apply: give --to DIR, --extract DIR, --exec CMD or --write TARGET (or [install] to, extract or exec, [receiver] write in the --config file)", cmd)
	case errors.As(err, &ce):
		return s.fieldError(cmd, "install", s.Install, ce.Field, ce.Value, ce.Want, nil)
	}
	return err
}
