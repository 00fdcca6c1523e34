"""bids_iron.group"""
