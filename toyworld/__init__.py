"""The toy world: procedurally generated scenes written in the formats real data comes in."""
