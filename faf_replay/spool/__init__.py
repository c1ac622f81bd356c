"""Every upload on disk as it arrives, so that a crash loses nothing acknowledged;
games left by a crash are found here at startup; the quarantine."""
