"""The default trainer plug-in and the contract every trainer follows."""
