package discover

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/mdns"
	"github.com/miekg/dns"
)

// ErrClosed is returned by an Announcer that has been closed.
var ErrClosed = errors.New("announcer is closed")

// Announcement is what a receiver says about itself.
type Announcement struct {
	ID      string // node id, 32 lowercase hex digits
	Name    string // human name; UTF-8 without control characters
	Group   string // "" = no group
	State   string // StateIdle or StateBusy
	Version int    // protocol version, 1 or more
	Port    int    // TCP port the receiver accepts sessions on
}

// Announcer answers mDNS queries for one receiver until it is closed.
type Announcer struct {
	log      *slog.Logger
	instance string

	mu     sync.Mutex // guards ann, closed and the zones' contents
	ann    Announcement
	closed bool
	served []served
}

// served is the responder on one interface.
type served struct {
	link   link
	zone   *zone
	server *mdns.Server
}

// Announce starts answering mDNS queries for a on the interfaces for cfg,
// one responder per interface.
func Announce(cfg Config, a Announcement, log *slog.Logger) (*Announcer, error) {
	log = orDiscard(log)
	txt, err := encodeTXT(a)
	if err != nil {
		return nil, fmt.Errorf("announce: %w", err)
	}
	if a.Port < 1 || a.Port > 65535 {
		return nil, fmt.Errorf("announce: port %d is not a TCP port (1-65535)", a.Port)
	}
	links, err := interfaces(cfg)
	if err != nil {
		return nil, fmt.Errorf("announce: %w", err)
	}
	an := &Announcer{
		log:      log,
		instance: instanceName(a.Name, a.ID),
		ann:      a,
	}
	for _, l := range links {
		svc, err := an.service(l, txt)
		if err != nil {
			an.Close()
			return nil, err
		}
		z := &zone{}
		z.svc.Store(svc)
		ifi := l.ifi
		srv, err := mdns.NewServer(&mdns.Config{Zone: z, Iface: &ifi, Logger: libLogger(log)})
		if err != nil {
			an.Close()
			return nil, fmt.Errorf("announce on %s: listen for mDNS queries: %w", l.ifi.Name, err)
		}
		an.served = append(an.served, served{link: l, zone: z, server: srv})
		log.Debug("announcing", "instance", an.instance, "iface", l.ifi.Name, "addrs", l.prefixes, "port", a.Port)
	}
	return an, nil
}

// Instance returns the DNS-SD instance name the receiver announces.
func (a *Announcer) Instance() string { return a.instance }

// SetState changes the announced state; the next answer carries it.
func (a *Announcer) SetState(state string) error {
	if err := checkState(state); err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	ann := a.ann
	ann.State = state
	txt, err := encodeTXT(ann)
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	svcs := make([]*mdns.MDNSService, len(a.served))
	for i, s := range a.served {
		if svcs[i], err = a.service(s.link, txt); err != nil {
			return err
		}
	}
	for i, s := range a.served {
		s.zone.svc.Store(svcs[i])
	}
	a.ann = ann
	return nil
}

// Close stops answering. Browsers stop seeing the receiver on their next
// query; no goodbye is sent. Close is idempotent.
func (a *Announcer) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	var errs []error
	for _, s := range a.served {
		if err := s.server.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("stop announcing on %s: %w", s.link.ifi.Name, err))
		}
	}
	return errors.Join(errs...)
}

// service builds the records for one interface. The host name and addresses
// are given explicitly: the library would otherwise look them up, which fails
// in a static build or yields 127.0.1.1.
func (a *Announcer) service(l link, txt []string) (*mdns.MDNSService, error) {
	svc, err := mdns.NewMDNSService(a.instance, Service, "local.", a.instance+".local.", a.ann.Port, l.ips(), txt)
	if err != nil {
		return nil, fmt.Errorf("announce on %s: build mDNS records: %w", l.ifi.Name, err)
	}
	return svc, nil
}

// zone serves the current records of one interface; SetState swaps them
// while the responder reads.
type zone struct {
	svc atomic.Pointer[mdns.MDNSService]
}

func (z *zone) Records(q dns.Question) []dns.RR {
	return z.svc.Load().Records(q)
}
