package transport

import "time"

// deadlineReader applies the idle, frame-completion and drain deadlines to
// every read the decoder makes.
type deadlineReader struct{ c *Conn }

func (r deadlineReader) Read(p []byte) (int, error) { return r.c.read(p) }

func (c *Conn) read(p []byte) (int, error) {
	// The decoder has scanned everything read so far: publish its counts,
	// so junk shows before any frame arrives.
	c.syncDecoderStats()
	for {
		draining := c.draining.Load()
		inFrame := c.dec.InFrame()
		if draining && !inFrame {
			return 0, errDrained
		}
		dl := c.readDeadline(inFrame, draining)
		if !dl.Equal(c.curDeadline) || draining != c.sawDraining {
			if err := c.nc.SetReadDeadline(dl); err != nil {
				return 0, err
			}
			c.curDeadline, c.sawDraining = dl, draining
		}
		if !draining && c.draining.Load() {
			// Drain began while we set our deadline and may have been
			// overwritten: recompute so its wake-up is not lost.
			continue
		}
		n, err := c.nc.Read(p)
		if n > 0 {
			c.lastActivity.Store(time.Now().UnixNano())
			if c.sniff {
				c.sniff = false
				if serr := sniffFirst(p[:n]); serr != nil {
					return 0, serr
				}
			}
		}
		return n, err
	}
}

// readDeadline is the deadline for the next read:
//   - inside a frame, FrameTimeout after the first read made for it;
//   - between frames, IdleTimeout after the last frame was answered (or
//     the connection opened): bytes outside frames are not activity, so a
//     peer trickling junk cannot keep a connection open. The deadline does
//     not move with every read, which also spares a timer update per read;
//   - while draining, no later than the drain deadline.
func (c *Conn) readDeadline(inFrame, draining bool) time.Time {
	var dl time.Time
	if inFrame {
		if c.frameStart.IsZero() {
			c.frameStart = time.Now()
		}
		dl = c.frameStart.Add(c.cfg.FrameTimeout)
	} else {
		c.frameStart = time.Time{}
		if idle := c.cfg.IdleTimeout; idle > 0 {
			dl = c.lastFrame.Add(idle)
		}
	}
	if draining {
		if dd := time.Unix(0, c.drainDeadline.Load()); dl.IsZero() || dd.Before(dl) {
			dl = dd
		}
	}
	return dl
}
