//! Redis broker and room store for Holdfast clusters (being built).
